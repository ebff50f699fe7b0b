#!/usr/bin/env bash
# Issue 23 on one GPU, in at most BUDGET_S (default 330) seconds of wall time:
#   1. the gpu-marked test of packed training (two graphed runs on their own CUDA streams == each alone,
#      bit for bit, with deterministic cuDNN);
#   2. benchmarks/packed.py: ResNet-18 and ResNet-50, batch 128, bf16, channels_last, K = 1, 2, 4, 8 runs:
#      streams (a pack's graphed steps, each on its stream), K graphed processes, the stacked (vmapped)
#      alternative and nfbench's whole runner (train_pack); aggregate images/s, ratios, share of the chip.
#      What the time left cannot fit is skipped and listed as skipped.
#
#   bash scripts/gpu_packed.sh                    # on the GPU machine, from the repository root
#   NFBENCH_SMOKE=1 bash scripts/gpu_packed.sh    # CPU rehearsal: tiny widths, graph code run eagerly
#
# Environment: OUT (what comes back: packed.log, packed.json, packed.md; default outputs/packed), BUDGET_S.
# Without nfbench installed, hydra-core, omegaconf and antlr4 travel as pure-Python copies in
# .evidence/pydeps (scripts/device_env.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=packed DEFAULT_BUDGET_S=330
. scripts/gpu_start.sh

say "1. gpu-marked test of packed training"
gpu_tests 75 tests/test_packed.py

say "2. benchmark"
run_benchmark benchmarks/packed.py
