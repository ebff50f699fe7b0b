#!/usr/bin/env bash
# Issue 26 on one GPU, in at most BUDGET_S (default 300) seconds of wall time: ImageNet input against the
# ResNet-50 step, on the 120 real photographs of imagenet-sample-120.tar.gz (13 MB, one call's carry).
#   1. the gpu-marked tests of the batched decode (nvJPEG and the device crops against the CPU path);
#   2. benchmarks/imagenet_input.py: decode tolerance, (c) the step alone (graphed and eager), (b) the gpu
#      loader and the decoder alone, (a) the cpu loader with 16, 8, 4 workers, (d) two-epoch train(cfg) runs
#      with each loader; ratios against the targets (loader >= 1.2x the step, epoch >= 0.95 of the step).
#
#   bash scripts/gpu_imagenet_input.sh prepare          # here, once: the tarball and pydeps into .evidence/
#   bash scripts/gpu_imagenet_input.sh                  # on the GPU machine, from the repository root
#   NFBENCH_SMOKE=1 bash scripts/gpu_imagenet_input.sh  # CPU rehearsal: ResNet-18 width 16, batch 8
#
# The device call (benchmarks/README.md (9)):
#   run(command="bash scripts/gpu_imagenet_input.sh", carry=[".evidence/pydeps",
#       ".evidence/imagenet-sample-120.tar.gz"], timeout_s=420)
# expected ~330 s of command plus ~120 s of machine start: about 7.5 of an issue's 15 minutes.
# Environment: OUT (imagenet_input.log, imagenet_input.json; default outputs/imagenet_input), BUDGET_S.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
    PY=${PYTHON:-python3}
    . scripts/cifar10_carry.sh
    carry_pydeps || exit 2
    cp ../shared/data/imagenet-sample-120.tar.gz .evidence/ || exit 2
    echo "prepared: tree $(carry_tree_mib) MiB + pydeps $(_carry_mib .evidence/pydeps) MiB + sample" \
        "$(_carry_mib .evidence/imagenet-sample-120.tar.gz) MiB (limit 64 MiB)"
    exit 0
fi
NAME=imagenet_input DEFAULT_BUDGET_S=300
. scripts/gpu_start.sh

say "1. gpu-marked tests of the batched decode"
gpu_tests 60 tests/test_gpu_decode.py tests/test_imagenet.py

say "2. benchmark"
run_benchmark benchmarks/imagenet_input.py
