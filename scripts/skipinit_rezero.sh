#!/usr/bin/env bash
# SkipInit (De & Smith 2020) and ReZero (Bachlechner et al. 2020) on CIFAR-10: ResNet-56 and
# ResNet-110 with SkipInit, ReZero and BatchNorm, 3 seeds each (18 runs,
# conf/experiment/skipinit_rezero_cifar10.yaml), then `nfbench report` (He et al.'s BatchNorm
# ResNet-56/110 numbers beside ours).
#
#   scripts/skipinit_rezero.sh [--slurm] [OVERRIDE ...]     (scripts/_sweep.sh lists the options)
source "$(dirname "$0")/_sweep.sh"
sweep skipinit_rezero_cifar10 experiment=skipinit_rezero_cifar10
report
