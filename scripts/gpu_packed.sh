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
T0=$(date +%s)
SMOKE=${NFBENCH_SMOKE:-0}
BUDGET_S=${BUDGET_S:-$([ "$SMOKE" = 1 ] && echo 900 || echo 330)}
OUTDIR=${OUT:-outputs/packed}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/packed.log") 2>&1
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

. scripts/device_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true; } 2>/dev/null
$PY -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), os.cpu_count(), 'CPU cores')"

say "1. gpu-marked test of packed training"
if $PY -c "import pytest" 2>/dev/null; then
    timeout 75 $PY -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_packed.py
    say "tests exit $?"
else
    say "pytest is not installed here: tests skipped"
fi

LEFT=$(( BUDGET_S - ($(date +%s) - T0) - 5 ))
say "2. benchmark, $LEFT s left for it"
ARGS=(--out "$OUTDIR" --budget "$LEFT")
[ "$SMOKE" = 1 ] && ARGS+=(--smoke)
timeout $(( LEFT + 15 )) $PY benchmarks/packed.py "${ARGS[@]}"
say "benchmark exit $?; done"
