#!/usr/bin/env bash
# NF-ResNet-50 (Brock, De, Smith 2021) on ImageNet (conf/experiment/nf_resnet50_imagenet.yaml),
# then `nfbench report`, with torchvision's BatchNorm ResNet-50 (same recipe) beside it.
# Needs IMAGENET=DIR (an ImageFolder tree with train/ and val/).
#
#   IMAGENET=/data/imagenet scripts/nf_resnet.sh [--slurm] [OVERRIDE ...]
source "$(dirname "$0")/_sweep.sh"
if [[ -z "${IMAGENET:-}" ]]; then
  echo "scripts/nf_resnet.sh: set IMAGENET=DIR to an ImageFolder tree with train/ and val/" >&2
  exit 2
fi
sweep nf_resnet50_imagenet experiment=nf_resnet50_imagenet "data.root=$IMAGENET"
report
