#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one run: at most 8 minutes on one H100 or H200
# (each step has its own time limit, so a slow step cannot starve the rest).
#
#   bash benchmarks/gpu_all.sh            # from the repository root, on a machine with one CUDA GPU
#   bash benchmarks/gpu_all.sh overhead   # only some steps: test overhead pipeline randaugment schemes
#
# The full log goes to $OUT/gpu_all.log when OUT is set (the lent GPU machines), else to
# benchmarks/gpu_all.log. nfbench needs hydra-core and omegaconf: installed (pip install -e .), or,
# on a machine without network access, as pure-Python copies in .pydeps/ (see benchmarks/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG="${OUT:-benchmarks}/gpu_all.log"
: >"$LOG"
if ! $PY -c "import hydra, omegaconf" 2>/dev/null && [ -d .pydeps ]; then
    export PYTHONPATH="$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}"
fi
# Without an install, nfbench.conf is the conf/ folder (pyproject.toml's package-dir says so).
if ! PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" $PY -c "import nfbench.conf" 2>/dev/null; then
    ln -sfn ../conf nfbench/conf
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step SECONDS COMMAND...: run, log, and go on whatever happens
    local limit=$1
    shift
    echo "\$ $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "(exit ${PIPESTATUS[0]})" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv; nproc; uptime; } 2>&1 | tee -a "$LOG"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    2>&1 | tee -a "$LOG"
ARGS="$*"
want() {  # the steps named on the command line, or all of them
    [ -z "$ARGS" ] || [[ " $ARGS " == *" $1 "* ]]
}
# Correctness first: CUDA batches equal the CPU ones, no per-step host syncs.
want test && step 60 $PY -m pytest -p no:cacheprovider -q -m gpu tests/test_device_data.py
# (1) runner overhead, and epoch time vs the model's own step: ResNet-18, 25,000 CIFAR-sized images per epoch.
want overhead && step 120 $PY benchmarks/runner_overhead.py --device cuda --model resnet18 --precision bf16 \
    --channels-last --train-images 25000 --epochs 4 --rounds 3
want overhead && step 60 $PY benchmarks/runner_overhead.py --device cuda --model resnet18 --train-images 25000
# (2) data pipeline vs model.
want pipeline && step 70 $PY benchmarks/data_pipeline.py --device cuda --model resnet18 --precision bf16 \
    --channels-last
# (1) with RandAugment, built by 8 worker processes: does it keep up inside a real run?
want randaugment && step 60 $PY benchmarks/runner_overhead.py --device cuda --model resnet18 --precision bf16 \
    --channels-last --train-images 25000 --randaugment --workers 8 --rounds 1
# (3, 4) every scheme's step time and peak memory vs bn, ResNet-18 and ResNet-50.
want schemes && step 45 $PY benchmarks/schemes.py --device cuda --model resnet18 --precision bf16 --channels-last
want schemes && step 65 $PY benchmarks/schemes.py --device cuda --model resnet50 --precision bf16 --channels-last
echo "== summary" | tee -a "$LOG"
grep -E "^(== |ratio |epoch time|\(exit)" "$LOG"
