#!/usr/bin/env bash
# Civitelli et al., "A Robust Initialization of Residual Blocks for Effective ResNet Training
# without Batch Normalization": every training grid of the paper (conf/experiment/civitelli_*),
# then `nfbench report` over them (Figs. 3, 4, 7 as curves, the table, torchvision's ResNet-50
# beside Fig. 5).
#   CIFAR-10, ResNet-18/50/101: BatchNorm, BatchNorm + conv shortcuts; IdShort, LearnScalar, ConvShort
#                               x {He fan-out, Brock} (BatchNorm too);
#                               3 seeds, 30 runs each
#   CIFAR-100, ResNet-50:       BatchNorm, BatchNorm + conv shortcuts, ConvShort; 3 seeds
#   ImageNet, ResNet-50:        ConvShort; 3 seeds (only with IMAGENET=DIR)
#
#   scripts/civitelli.sh [--slurm] [OVERRIDE ...]     (scripts/_sweep.sh lists the options)
source "$(dirname "$0")/_sweep.sh"
for m in resnet18 resnet50 resnet101; do
  sweep "civitelli_cifar10_$m" "experiment=civitelli_cifar10_$m"
done
sweep civitelli_cifar100_resnet50 experiment=civitelli_cifar100_resnet50
if [[ -n "${IMAGENET:-}" ]]; then
  sweep civitelli_imagenet_resnet50 experiment=civitelli_imagenet_resnet50 "data.root=$IMAGENET"
fi
report
