#!/usr/bin/env bash
# Fixup (Zhang, Dauphin, Ma 2019): the reference code's CIFAR-10 ResNet-110 recipe for Fixup and
# for the BatchNorm baseline under the same recipe, 3 seeds each; with IMAGENET=DIR also the
# ImageNet ResNet-50 recipe, Fixup (mixup 0.7) and BatchNorm (mixup 0.2, the paper's
# cross-validated values).  Then `nfbench report`, with He et al.'s ResNet-110 numbers beside ours.
#
#   scripts/fixup.sh [--slurm] [OVERRIDE ...]     (scripts/_sweep.sh lists the options)
source "$(dirname "$0")/_sweep.sh"
sweep fixup_cifar10_resnet110 experiment=fixup_cifar10_resnet110
# The reference block is Fixup's alone; the baseline is nfbench's pre-activation BatchNorm ResNet-110.
sweep fixup_cifar10_resnet110_bn experiment=fixup_cifar10_resnet110 init=bn
if [[ -n "${IMAGENET:-}" ]]; then
  sweep fixup_imagenet_resnet50 experiment=fixup_imagenet_resnet50 "data.root=$IMAGENET"
  sweep fixup_imagenet_resnet50_bn experiment=fixup_imagenet_resnet50 init=bn trainer.mixup_alpha=0.2 \
    "data.root=$IMAGENET"
fi
report
