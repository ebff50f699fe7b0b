#!/usr/bin/env bash
# Issue 15 on one GPU, in at most ~200 s wall time:
#   1. the gpu-marked tests of trainer.cuda_graph (captured step vs eager: losses, weights, BN statistics);
#   2. benchmarks/cuda_graph.py: ResNet-18 and ResNet-50, CIFAR, batch 128, bf16, channels_last: the eager
#      step, trainer.cuda_graph, trainer.compile (default and reduce-overhead) -- images/s, first-epoch
#      extra time, per-step losses against eager, and the graph's pure compute (the minimal-loop ratio).
#      What the time left cannot fit is skipped and listed as skipped.
#
#   bash scripts/gpu_cuda_graph.sh                    # on the GPU machine, from the repository root
#   NFBENCH_SMOKE=1 bash scripts/gpu_cuda_graph.sh    # CPU rehearsal: tiny model, graph emulated, no compile
#
# Environment: OUT (what comes back: cuda_graph.log, cuda_graph.json, cuda_graph.md; default
# outputs/cuda_graph), BUDGET_S (wall seconds for the whole script; default 195).
# Without nfbench installed, hydra-core, omegaconf and antlr4 travel as pure-Python copies in
# .evidence/pydeps, as for scripts/gpu_evidence.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=cuda_graph DEFAULT_BUDGET_S=195
. scripts/gpu_start.sh

say "1. gpu-marked tests of trainer.cuda_graph"
gpu_tests 75 -s tests/test_cuda_graph.py

say "2. benchmark"
run_benchmark benchmarks/cuda_graph.py
