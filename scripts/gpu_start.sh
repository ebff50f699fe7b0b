# Sourced first by the one-call GPU scripts (gpu_cuda_graph.sh, gpu_packed.sh, gpu_randaugment.sh), from the
# repository root, with NAME (the log's name and OUT's default folder under outputs/) and DEFAULT_BUDGET_S
# (the call's wall seconds on the GPU) set. Sets T0, SMOKE (NFBENCH_SMOKE=1: the CPU rehearsal), BUDGET_S,
# OUTDIR and PY; tees everything into $OUTDIR/$NAME.log; defines say (a line stamped with the seconds since
# T0), gpu_tests (the gpu-marked tests of the named files, under a timeout), budget_left and run_benchmark; makes nfbench
# importable (device_env.sh) and prints the machine.
T0=$(date +%s)
SMOKE=${NFBENCH_SMOKE:-0}
BUDGET_S=${BUDGET_S:-$([ "$SMOKE" = 1 ] && echo 900 || echo "$DEFAULT_BUDGET_S")}
OUTDIR=${OUT:-outputs/$NAME}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/$NAME.log") 2>&1
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
budget_left() { echo $(( BUDGET_S - ($(date +%s) - T0) - 5 )); }
gpu_tests() {  # gpu_tests SECONDS FILE...: the gpu-marked tests of FILE..., skipped where pytest is missing
    local limit=$1
    shift
    if $PY -c "import pytest" 2>/dev/null; then
        timeout "$limit" $PY -m pytest -p no:cacheprovider -q -rs -m gpu "$@"
        say "tests exit $?"
    else
        say "pytest is not installed here: tests skipped"
    fi
}
run_benchmark() {  # run_benchmark SCRIPT [ARG...]: SCRIPT --out $OUTDIR --budget (what is left), --smoke when SMOKE=1
    local script=$1 left
    shift
    left=$(budget_left)
    say "benchmark, $left s left for it"
    timeout $(( left + 15 )) $PY "$script" "$@" --out "$OUTDIR" --budget "$left" $([ "$SMOKE" = 1 ] && echo --smoke)
    say "benchmark exit $?; done"
}

. scripts/device_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true; } 2>/dev/null
$PY -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), os.cpu_count(), 'CPU cores')"
