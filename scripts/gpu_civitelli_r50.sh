#!/usr/bin/env bash
# Issue 21: Civitelli et al. Figure 3(a), ResNet-50 (CIFAR stem, full width) on the ORIGINAL CIFAR-10
# pixels, on one H200, in two consecutive calls of the device tool (docs/results-cifar10-r50-gpu.md). The
# pixels travel as scripts/gpu_he_cifar10.sh's do (scripts/cifar10_carry.sh: the same two pieces).
#
#   PHASE=1  environment; each ResNet-50 arm's step alone and 1, 2, 3 processes side by side
#            (benchmarks/concurrency.py --cuda-graph --each-alone: bn, idshort, learnscalar, convshort,
#            batch 128, bf16, channels_last); one real 3-epoch run of the preset (convshort, the same step,
#            RandAugment as call 2 builds it) on CIFAR-shaped random pixels; the plan: the epochs E that
#            every arm gets. Writes .evidence/gpu_r50_call1.json and $OUT/{r50_call1.log, r50_call1.json,
#            concurrency_r50.json}.
#   PHASE=2  joins, checks and converts the original pixels (digests checked), then runs, three at a
#            time (two lanes of main arms, one of short runs):
#              main arms, E epochs each, the same E for all (>= 30), seed 0, all 50,000 training images,
#              the full test set, in this order: bn, convshort, idshort, learnscalar (He fan-out, the
#              schemes' defaults), then bn_conv_shortcut if the plan fits it;
#              short runs, SHORT_EPOCHS each (1 epoch = 390 steps, fixed here before any run): idshort,
#              learnscalar, convshort with init.weights=brock on ResNet-50, then on ResNet-101 (the
#              paper: "unable to train"; nfbench stops a run at the first non-finite loss and records
#              status "diverged" with the step; one that does not diverge is read by its loss and test
#              top-1 after the epoch against chance, 10%, and the He-init arms' epoch 1).
#            A run left without the time it needs alone is not started (said in the log); at the deadline
#            what runs is stopped with a checkpoint (KEEP_RUNS=1 resumes it on the warm machine). Then
#            `nfbench report`, a readout per run (divergence, epoch-1,
#            epoch-10 and final accuracies), and $OUT/{r50_call2.log, r50_runs.tgz (run files without
#            checkpoints, report, console logs), r50_report.md, r50_call1.json}.
#
# The paper's recipe is the preset (conf/experiment/civitelli_cifar10_resnet50.yaml): SGD lr 0.01,
# momentum 0.9, batch 128, no weight decay, cosine stepped per epoch over the run's epochs, crop + flip +
# RandAugment (N=2, M=9). Not the paper's: E epochs (the paper does not state its budget; the preset's 200
# do not fit a call), bf16 autocast, one seed (the paper: three).
# The step: trainer.cuda_graph=true. On this H200, ResNet-50 convshort trained at 18,240 img/s graphed
# and 20,952 with torch.compile's reduce-overhead, whose compilation cost 13.4 s more in the first epoch
# (benchmarks/README.md, section 6): over ~30 epochs (~90 s of compute per arm) the 15% saves about what
# the compilation costs, so the graph, which starts in under 3 s, is chosen. The graphed step runs at 1.02x
# its pure compute, so side by side buys little; call 1 measures 1, 2 and 3 processes to say how little.
# RandAugment: with trainer.cuda_graph=true on CUDA, each batch (crop, flip, RandAugment N=2 M=9, normalise)
# is built on the GPU in a CUDA graph of its own beside the captured step (issue 22, nfbench/data/device.py);
# data.num_workers (RA_WORKERS) then only matters for the CPU rehearsal, where the step is eager and the
# workers build RandAugment. Call 1 measures the step with this batch build, so E accounts for it.
# Sizing before call 1: four arms at ~13-20k img/s alone (bn's step is ~1.5x convshort's: section 3) need
# ~12-15 s per epoch of all four, so ~30 epochs fit call 2's ~8 minutes with the short runs; call 1
# decides E.
#
# ---- The GPU session's plan (issue 21): two `run` calls, the second sent at once after the first ----
# 0. Here, no device:  bash scripts/cifar10_carry.sh prepare   (call 1 ~54.3 MiB, call 2 ~54.2 MiB)
# 1. run(command="PHASE=1 bash scripts/gpu_civitelli_r50.sh",
#        carry=[".evidence/pydeps", ".evidence/cifar10-lossless-webp.part-aa"], timeout_s=200)
#    expected: ~75 s of command (its steps' timeouts cap it at ~170 s), plus the machine's start
# 2. run(command="PHASE=2 bash scripts/gpu_civitelli_r50.sh",
#        carry=[".evidence/cifar10-lossless-webp.part-ab"], timeout_s=600)
#    expected: ~570 s (BUDGET_S=570: data ~20 s, runs until the deadline at 535 s at the latest, report
#    and packing ~20 s); send it without reading call 1's output first (30 s of warmth). "call 1's ... is
#    not on this machine": the machine went cold, and call 1 must be repeated.
# Device time: start ~120 + call 1 ~90 + call 2 ~585 = ~795 s, give_back at once: ~13 of the 15 minutes.
# --------------------------------------------------------------------------------------------------
#
#   NFBENCH_SMOKE=1 PHASE=1 bash scripts/gpu_civitelli_r50.sh; NFBENCH_SMOKE=1 PHASE=2 bash scripts/gpu_civitelli_r50.sh
#       # CPU rehearsal: the real pieces and conversion; runs at smoke size (640 / 200 images, width 4,
#       # 1 epoch, 1 RandAugment worker, trainer.device=cpu, fp32, no graph; R50_SMOKE_EPOCHS=N for longer
#       # main arms, e.g. to rehearse the deadline with BUDGET_S=70)
#
# Environment: PHASE (1 or 2; or --call 1|2), OUT (default outputs/gpu_civitelli_r50), R50_WORK (default
# /tmp/nfbench-r50), BUDGET_S (call 2's wall seconds; default 570), RA_WORKERS (data.num_workers:
# RandAugment's CPU processes per run in the CPU rehearsal; unused by the graphed GPU runs), SHORT_EPOCHS (the Brock runs' fixed budget; default 1),
# MIN_EPOCHS (default 30), KEEP_RUNS (1: call 2 keeps an earlier call 2's plan and runs, resumes the
# unfinished ones and starts those not started, time allowing).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PHASE=${PHASE:-}
[ "${1:-}" = --call ] && PHASE=${2:-}
[[ $PHASE == 1 || $PHASE == 2 ]] || { echo "gpu_civitelli_r50: set PHASE=1 or PHASE=2 (or --call 1|2)"; exit 2; }
SMOKE=${NFBENCH_SMOKE:-0}
PY=${PYTHON:-python3}
OUTDIR=${OUT:-outputs/gpu_civitelli_r50}
WORK=${R50_WORK:-/tmp/nfbench-r50}
CALL1_JSON=.evidence/gpu_r50_call1.json
. scripts/cifar10_carry.sh
. scripts/gpu_runs.sh
if [ "$PHASE" = 2 ]; then carry_need_call1 "$CALL1_JSON" || exit 3; else carry_need_call1_carry || exit 3; fi

mkdir -p "$OUTDIR" "$WORK"
exec > >(tee "$OUTDIR/r50_call$PHASE.log") 2>&1
. scripts/device_env.sh
export OMP_NUM_THREADS=1
say "gpu_civitelli_r50 call $PHASE$([ "$SMOKE" = 1 ] && echo ' (SMOKE: CPU rehearsal)'); commit $(git rev-parse --short HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -q . && echo ', dirty')"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } 2>/dev/null
$PY -c "import torch, torchvision, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, torch.cuda.is_available(), os.cpu_count(), 'CPU cores')"

SHORT_EPOCHS=${SHORT_EPOCHS:-1}
COMMON=(data.download=false data.test_batch_size=500 trainer.progress=false seed=0)
if [ "$SMOKE" = 1 ]; then
    RA_WORKERS=${RA_WORKERS:-1}
    COMMON+=(trainer.device=cpu data.train_subset=640 data.test_subset=200 model.width=4 data.num_workers="$RA_WORKERS")
    MIN_EPOCHS=${R50_SMOKE_EPOCHS:-1} MAX_EPOCHS=${R50_SMOKE_EPOCHS:-1}
else
    RA_WORKERS=${RA_WORKERS:-4}
    COMMON+=(trainer.precision=bf16 trainer.channels_last=true trainer.cuda_graph=true data.num_workers="$RA_WORKERS")
    MIN_EPOCHS=${MIN_EPOCHS:-30} MAX_EPOCHS=200
fi
SCHEMES=(bn idshort learnscalar convshort)

if [ "$PHASE" = 1 ]; then
    say "piece 1: $(du -h "$CARRY_PIECE1" | cut -f1), pydeps: $(du -sh "$CARRY_PYDEPS" | cut -f1)"
    rm -f "$CALL1_JSON"
    if [ "$SMOKE" = 1 ]; then
        BENCH=(--device cpu --threads 1 --width 4 --jobs 1 2 --seconds 1 --warmup 2)
        FAKE=(640 200)
    else
        BENCH=(--device cuda --precision bf16 --channels-last --jobs 1 2 3 --seconds 3 --warmup 10)
        FAKE=(50000 10000)
    fi
    say "1. ResNet-50, the graphed step: each arm alone, then 1, 2, 3 processes side by side"
    (cd benchmarks && timeout 80 $PY concurrency.py "${BENCH[@]}" --cuda-graph --each-alone --model resnet50 \
        --schemes "${SCHEMES[@]}" --json "$WORK/concurrency_r50.json") || { say "concurrency benchmark failed"; exit 1; }
    cp "$WORK/concurrency_r50.json" "$OUTDIR/"
    fake_cifar10 "$WORK/fake" "${FAKE[@]}" || exit 1
    say "2. one real run of the preset (convshort, RandAugment built on the device), 3 epochs of ${FAKE[0]} random images"
    rm -rf "$WORK/calibration"
    t=$(date +%s.%N)
    timeout 75 $PY -m nfbench.cli train experiment=civitelli_cifar10_resnet50 init=convshort data.root="$WORK/fake" \
        "${COMMON[@]}" trainer.epochs=3 logger=none hydra.run.dir="$WORK/calibration" >"$WORK/calibration.out" 2>&1
    rc=$?
    wall=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    tail -n 5 "$WORK/calibration.out"
    [ $rc = 0 ] || { say "the preset with the graphed step failed (exit $rc, above): no plan"; exit 1; }
    $PY scripts/gpu_plan.py call1 --concurrency "$WORK/concurrency_r50.json" --calibration "$WORK/calibration" \
        --process-wall "$wall" --step graph --out "$CALL1_JSON" "$OUTDIR/r50_call1.json" || exit 1
    say "plan for call 2 (570 s, of which ~20 s data and 35 s report and packing):"
    $PY scripts/gpu_plan.py r50 --call1 "$CALL1_JSON" --seconds 515 --min-epochs "$MIN_EPOCHS" \
        --max-epochs "$MAX_EPOCHS" --short-epochs "$SHORT_EPOCHS"
    say "call 1 done; send call 2 now"
    exit 0
fi

# --- PHASE 2 ----------------------------------------------------------------------------------------
BUDGET_S=${BUDGET_S:-570}
DEADLINE=$(( T0 + BUDGET_S - 35 ))
[ "${KEEP_RUNS:-0}" = 1 ] || rm -rf "$WORK/runs" "$WORK/logs" "$WORK/plan.txt"
rm -rf "$WORK/report"
mkdir -p "$WORK/runs"
TARBALL="$WORK/cifar10-lossless-webp.tar.gz"
say "1. data: join, sha256, convert the original pixels"
if [ ! -f "$WORK/data/cifar-10-batches-py/test_batch" ]; then
    carry_join "$TARBALL" || exit 2
    carry_convert "$TARBALL" "$WORK/data" || exit 2
fi
COMMON+=(data.root="$WORK/data")

main_args() {  # main_args ARM: the overrides of a main arm
    echo experiment=civitelli_cifar10_resnet50 init="$1" trainer.epochs="$R50_EPOCHS"
}
short_args() {  # short_args [r101_]SCHEME: Brock's weights for SHORT_EPOCHS
    local depth=50 scheme=$1
    [[ $1 == r101_* ]] && depth=101 scheme=${1#r101_}
    echo experiment=civitelli_cifar10_resnet$depth init="$scheme" init.weights=brock trainer.epochs="$SHORT_EPOCHS"
}
if [ "${KEEP_RUNS:-0}" = 1 ] && [ -f "$WORK/plan.txt" ]; then
    say "2. KEEP_RUNS=1: the plan of the earlier call, resuming its unfinished runs"
    plan=$(cat "$WORK/plan.txt")
else
    say "2. plan: $(( DEADLINE - $(date +%s) )) s until the deadline"
    plan=$($PY scripts/gpu_plan.py r50 --call1 "$CALL1_JSON" --seconds $(( DEADLINE - $(date +%s) )) \
        --min-epochs "$MIN_EPOCHS" --max-epochs "$MAX_EPOCHS" --short-epochs "$SHORT_EPOCHS") || exit 1
    echo "$plan" >"$WORK/plan.txt"
fi
echo "$plan"
eval "$(grep -E '^R50_[A-Z]+=' <<<"$plan")"
declare -A EST=()
for kv in $R50_EST; do EST[${kv%%:*}]=${kv##*:}; done
# shellcheck disable=SC2206
MAIN_QUEUE=($R50_ARMS) SHORT_QUEUE=($R50_SHORTS)

start_next() {  # start_next LANE [first]: the next run of that queue (main | short) that has the time it
    # needs alone; the first wave starts whatever the time (the plan sized it; the deadline checkpoints it)
    local lane=$1 first=${2:-} name dir key
    while :; do
        if [ "$lane" = main ]; then
            [ ${#MAIN_QUEUE[@]} = 0 ] && return 1
            name=${MAIN_QUEUE[0]} MAIN_QUEUE=("${MAIN_QUEUE[@]:1}") dir="$WORK/runs/civitelli_r50_$name" key=$name
        else
            [ ${#SHORT_QUEUE[@]} = 0 ] && return 1
            name=brock_${SHORT_QUEUE[0]} key=short_${SHORT_QUEUE[0]} SHORT_QUEUE=("${SHORT_QUEUE[@]:1}")
            [[ $name == brock_r101_* ]] || name=brock_r50_${name#brock_}
            dir="$WORK/runs/$name"
        fi
        if runs_finished "$dir"; then say "$name: finished in an earlier call"; continue; fi
        if [ -z "$first" ] && (( $(date +%s) + ${EST[$key]:-0} > DEADLINE )); then
            say "$name: not started ($(( DEADLINE - $(date +%s) )) s left, it needs ~${EST[$key]} s alone)"
            continue
        fi
        # shellcheck disable=SC2046
        if [ "$lane" = main ]; then runs_launch "$name" "$dir" $(main_args "$name") "${COMMON[@]}"
        else runs_launch "$name" "$dir" $(short_args "${key#short_}") "${COMMON[@]}"; fi
        LANE_OF[$name]=$lane
        return 0
    done
}

say "3. runs: $R50_EPOCHS epochs for $R50_ARMS; $SHORT_EPOCHS epoch(s) for Brock's $R50_SHORTS"
declare -A LANE_OF=()
start_next main first; start_next main first; start_next short first
while runs_any_alive || [ ${#MAIN_QUEUE[@]} -gt 0 ] || [ ${#SHORT_QUEUE[@]} -gt 0 ]; do
    now=$(date +%s)
    if [ "$now" -ge "$DEADLINE" ]; then
        say "deadline: stopping what still runs (SIGTERM: checkpoint, exit; KEEP_RUNS=1 resumes); not started: main arms [${MAIN_QUEUE[*]}], short runs [${SHORT_QUEUE[*]}]"
        alive=()
        for n in "${!RUN_PID[@]}"; do runs_alive "$n" && alive+=("$n"); done
        [ ${#alive[@]} -gt 0 ] && runs_stop "${alive[@]}"
        break
    fi
    busy_main=0 busy_short=0
    for n in "${!RUN_PID[@]}"; do
        runs_alive "$n" && { [ "${LANE_OF[$n]}" = main ] && busy_main=$((busy_main + 1)) || busy_short=1; }
    done
    while (( busy_main < 2 )) && start_next main; do busy_main=$((busy_main + 1)); done
    if (( busy_short == 0 )) && ! start_next short; then  # no short runs left: their lane takes main arms
        (( busy_main < 3 )) && start_next main
    fi
    ! runs_any_alive && [ ${#MAIN_QUEUE[@]} = 0 ] && [ ${#SHORT_QUEUE[@]} = 0 ] && break
    (( (now - T0) % 30 < 5 )) && { say "progress"; $PY scripts/gpu_plan.py status "$WORK/runs"; }
    sleep 5
done
for n in "${!RUN_PID[@]}"; do wait "${RUN_PID[$n]}" 2>/dev/null; done
say "4. runs ended"
$PY scripts/gpu_plan.py status "$WORK/runs"
for f in "$WORK"/logs/*.out; do echo "== tail of $f"; tail -n 3 "$f"; done

timeout 90 $PY -m nfbench.cli report "$WORK/runs" --out "$WORK/report"  # its init column tells bn_conv_shortcut apart
cp "$WORK/report/report.md" "$OUTDIR/r50_report.md" 2>/dev/null  # its table is in the log above
say "readout: what Figure 3(a)'s claims are read from (docs/results-cifar10-r50-gpu.md)"
$PY - "$WORK/runs" <<'EOF'
import json, sys
from pathlib import Path
print("| run | status | epochs | divergence | test top-1 epoch 1 | 5 | 10 | last | train top-1 last | train loss last |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for run in sorted(Path(sys.argv[1]).iterdir()):
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    d = result.get("divergence")
    div = (f"epoch {d['epoch']}, step {d['step']}, " + (f"loss {d['loss']}" if d["loss"] is not None
                                                         else "non-finite weights")) if d else "-"
    at = {r["epoch"]: r["test_top1"] for r in rows}
    last = rows[-1] if rows else {}
    print(f"| {run.name} | {result.get('status', 'stopped')} | {len(rows)}/{result.get('epochs_planned', '?')} | {div} | "
          + " | ".join(f"{at[e]:.2f}" if e in at else "-" for e in (1, 5, 10))
          + f" | {last.get('test_top1', float('nan')):.2f} | {last.get('train_top1', float('nan')):.2f} | "
          f"{last.get('train_loss', float('nan')):.4f} |")
EOF
cp "$CALL1_JSON" "$OUTDIR/r50_call1.json"
runs_pack "$OUTDIR/r50_runs.tgz" runs $([ -d "$WORK/report" ] && echo report) logs plan.txt
ls -la "$OUTDIR"
say "done"
