#!/usr/bin/env bash
# Issue 22 on one GPU, in at most BUDGET_S (default 300) seconds of wall time: RandAugment built on the
# device in a CUDA graph of its own beside the captured step (nfbench/data/device.py, CapturedBuilder).
#   1. the gpu-marked tests of the device pipeline and the whole-batch RandAugment (the captured batch build
#      equals the eager one; the batched ops equal torchvision's on CUDA tensors);
#   2. benchmarks/cuda_graph.py --randaugment: ResNet-18 and ResNet-50, batch 128, bf16, channels_last,
#      graphed, crop + flip with and without RandAugment (N=2, M=9), and today's other path (eager steps,
#      RandAugment in 8 CPU workers): images/s and the ratios against the target (a graphed ResNet-18
#      epoch with RandAugment >= 0.9 of the same epoch without it); then K=4 such runs side by side,
#      aggregate images/s.
#
#   bash scripts/gpu_randaugment.sh                    # on the GPU machine, from the repository root
#   NFBENCH_SMOKE=1 bash scripts/gpu_randaugment.sh    # CPU rehearsal: tiny width and data, graph code eager
#
# The device call (no data travels: the benchmark writes CIFAR-shaped random pixels; hydra, omegaconf and
# antlr4 travel as .evidence/pydeps, made by `bash scripts/cifar10_carry.sh prepare`):
#   run(command="bash scripts/gpu_randaugment.sh", carry=[".evidence/pydeps"], timeout_s=420)
# expected: ~330 s of command plus ~120 s of machine start, about 7.5 of an issue's 15 minutes: room for
# one rerun at a smaller BUDGET_S.
#
# Environment: OUT (what comes back: randaugment.log, cuda_graph.json, cuda_graph.md; default
# outputs/randaugment), BUDGET_S.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=randaugment DEFAULT_BUDGET_S=300
. scripts/gpu_start.sh

say "1. gpu-marked tests of the device pipeline and RandAugment"
gpu_tests 90 tests/test_device_data.py tests/test_batch_augment.py

say "2. benchmark"
run_benchmark benchmarks/cuda_graph.py --randaugment --side-by-side "$([ "$SMOKE" = 1 ] && echo 2 || echo 4)"
