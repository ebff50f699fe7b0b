#!/usr/bin/env bash
# Arpit, Campos, Bengio 2019: weight-normalised WRN-40-2 on CIFAR-10 with their initialisation, and
# the BatchNorm WRN beside it, 3 seeds each (conf/experiment/arpit_wn_cifar10_wrn.yaml), then
# `nfbench report`.
#
#   scripts/arpit_wn.sh [--slurm] [OVERRIDE ...]     (scripts/_sweep.sh lists the options)
source "$(dirname "$0")/_sweep.sh"
sweep arpit_wn_cifar10_wrn experiment=arpit_wn_cifar10_wrn
report
