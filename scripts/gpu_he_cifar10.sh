#!/usr/bin/env bash
# Issue 20 (item 4): He et al. 2016a's ResNet-20 recipe on the ORIGINAL CIFAR-10 pixels, on one H200, in
# two consecutive calls of the device tool (docs/results-cifar10-gpu.md, "He et al. 2016a on the original
# pixels"). The pixels travel as two pieces of ../shared/data/cifar10-lossless-webp.tar.gz
# (scripts/cifar10_carry.sh), so call 2 must follow call 1 while the machine is warm (30 s).
#
#   PHASE=1  environment; aggregate images/s of 1, 2, 4 processes training He's ResNet-20 with the
#            captured step (benchmarks/concurrency.py --cuda-graph, model=he_resnet20 init=bn, batch 128,
#            fp32, channels_last); one real 3-epoch run of the preset with that step on CIFAR-shaped random
#            pixels (the composition check: preset + trainer.cuda_graph + the on-device loader with
#            data.pixel_mean; its steady epoch and fixed cost); the plan that follows: how many of call
#            2's four runs fit. Writes .evidence/gpu_he_call1.json (kept on the machine for call 2) and
#            $OUT/{he_call1.log, he_call1.json, concurrency.json}.
#   PHASE=2  joins the pieces, checks the tarball's sha256, converts it twice in parallel (the original
#            pixels, refused unless their digests are the data README's; and the JPEG twin, --reencode 75),
#            then, side by side, in this priority order, the first runs that call 1's measurement says
#            finish inside the call (the recipe is never shortened):
#              1. he_s0      experiment=he_cifar10_resnet20 seed=0, original pixels
#              2. he_q75_s0  the same on the q75 JPEG twin, nothing else changed
#              3. he_s1, he_s2   seeds 1 and 2, original pixels
#            watching their pace: a projected overrun drops the lowest-priority run still going (stopped
#            with its checkpoint, kept apart under dropped/); at the deadline what still runs is stopped
#            with a checkpoint (a rerun with KEEP_RUNS=1 on the warm machine resumes it). Then `nfbench
#            report --group-by +data.root` and $OUT/{he_call2.log, he_runs.tgz (every run's config.yaml,
#            env.json, metrics.jsonl, result.json, train.log, the report, the runs' console logs; no
#            checkpoints), he_report.md, he_call1.json}.
#
# He's recipe is the preset (conf/experiment/he_cifar10_resnet20.yaml): his network (model=he_resnet20,
# init=bn, He fan-in drawn), per-pixel mean, SGD lr 0.1, momentum 0.9, wd 1e-4, batch 128, lr / 10 after
# epochs 82 and 123, 164 epochs = 63,960 iterations, crop + flip. The step: trainer.cuda_graph=true (the
# whole step captured; on ResNet-18 as fast as torch.compile's reduce-overhead, 57,929 vs 58,163 img/s,
# with 1.6 s of capture instead of 8.2 s of compilation: benchmarks/README.md section 6). Sizing, before
# call 1 measures it: the compiled pre-activation ResNet-20 trained at 37,000 img/s alone on this H200
# (1.3 s per 50,000-image epoch) and 13,300-20,000 img/s beside 2-5 other runs (same README, section 5;
# docs/results-cifar10-gpu.md), so one 164-epoch run is ~4-5 minutes alone: two or three of the four
# runs should fit call 2's ~8 minutes of training, and call 1's numbers decide which.
#
# ---- The GPU session's plan (issue 20): two `run` calls, the second sent at once after the first ----
# 0. Here, no device:  bash scripts/cifar10_carry.sh prepare   (pieces and pydeps into .evidence/; prints
#    each call's size: call 1 ~54.3 MiB, call 2 ~54.2 MiB of the 64 MiB)
# 1. run(command="PHASE=1 bash scripts/gpu_he_cifar10.sh",
#        carry=[".evidence/pydeps", ".evidence/cifar10-lossless-webp.part-aa"], timeout_s=200)
#    expected: ~60-75 s of command (its steps' own timeouts cap it at ~180 s if a step hangs or the
#    graphed run fails and the eager one is measured instead), plus the machine's start (1-2 minutes)
# 2. run(command="PHASE=2 bash scripts/gpu_he_cifar10.sh",
#        carry=[".evidence/cifar10-lossless-webp.part-ab"], timeout_s=600)
#    expected: ~570 s (BUDGET_S=570: data ~45 s, runs until the plan's end or the deadline at 535 s,
#    report and packing ~20 s); send it without reading call 1's output first (30 s of warmth). If it
#    answers "call 1's ... is not on this machine", the machine went cold: call 1 must be repeated.
# Device time: start ~120 + call 1 ~85 + call 2 ~585 (with transfers) = ~790 s; give_back at once after
# call 2 (else 30 s idle): ~13 of the 15 minutes. A deadline-stopped run can be finished only by
# `KEEP_RUNS=1 PHASE=2 bash scripts/gpu_he_cifar10.sh` sent at once on the warm machine, if time is left.
# --------------------------------------------------------------------------------------------------
#
#   NFBENCH_SMOKE=1 PHASE=1 bash scripts/gpu_he_cifar10.sh; NFBENCH_SMOKE=1 PHASE=2 bash scripts/gpu_he_cifar10.sh
#       # CPU rehearsal: the real pieces, join, sha256 and conversions; runs at smoke size (640 training and
#       # 200 test images, width 4, 4 epochs with lr / 10 after 2 and 3, trainer.device=cpu, no graph:
#       # trainer.cuda_graph refuses a CPU; HE_SMOKE_EPOCHS=N for longer ones, e.g. to rehearse the deadline)
#
# Environment: PHASE (1 or 2; or --call 1|2), OUT (what comes back; default outputs/gpu_he_cifar10),
# HE_WORK (data, runs, logs; default /tmp/nfbench-he), BUDGET_S (call 2's wall seconds; default 570),
# HE_STEP (graph, compile: trainer.compile_mode=reduce-overhead, or eager; default graph; call 2
# trains with the step call 1 measured), COMPARE_COMPILE (1: call 1 also times the compiled step, about
# 40 s more), HE_MAX_RUNS (at most this many of the four; default 4), KEEP_RUNS (1: call 2 resumes the
# run directories an earlier call 2 left unfinished, and starts no new run), CIFAR_LOSSLESS (prepare's
# tarball).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PHASE=${PHASE:-}
[ "${1:-}" = --call ] && PHASE=${2:-}
[[ $PHASE == 1 || $PHASE == 2 ]] || { echo "gpu_he_cifar10: set PHASE=1 or PHASE=2 (or --call 1|2)"; exit 2; }
SMOKE=${NFBENCH_SMOKE:-0}
PY=${PYTHON:-python3}
OUTDIR=${OUT:-outputs/gpu_he_cifar10}
WORK=${HE_WORK:-/tmp/nfbench-he}
CALL1_JSON=.evidence/gpu_he_call1.json
. scripts/cifar10_carry.sh
. scripts/gpu_runs.sh
# First, in a second: are the pieces this call needs here?
if [ "$PHASE" = 2 ]; then carry_need_call1 "$CALL1_JSON" || exit 3; else carry_need_call1_carry || exit 3; fi

mkdir -p "$OUTDIR" "$WORK"
exec > >(tee "$OUTDIR/he_call$PHASE.log") 2>&1
. scripts/device_env.sh
export OMP_NUM_THREADS=$([ "$SMOKE" = 1 ] && echo 1 || echo 2)
say "gpu_he_cifar10 call $PHASE$([ "$SMOKE" = 1 ] && echo ' (SMOKE: CPU rehearsal)'); commit $(git rev-parse --short HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -q . && echo ', dirty')"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } 2>/dev/null
$PY -c "import torch, torchvision, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, torch.cuda.is_available(), os.cpu_count(), 'CPU cores')"

step_overrides() {  # the training step's overrides: graph | compile | eager
    case $1 in
        graph) [ "$SMOKE" = 1 ] || echo trainer.cuda_graph=true ;;
        compile) echo trainer.compile=true trainer.compile_mode=reduce-overhead ;;
        eager) ;;
        *) echo "HE_STEP=$1: choose graph, compile or eager" >&2; return 2 ;;
    esac
}
COMMON=(data.download=false data.test_batch_size=500 trainer.progress=false trainer.channels_last=true)
if [ "$SMOKE" = 1 ]; then
    COMMON+=(trainer.device=cpu data.train_subset=640 data.test_subset=200 model.width=4)
    HE_EPOCHS=${HE_SMOKE_EPOCHS:-4}  # smoke only (the GPU runs the preset's 164): lr / 10 at 1/2 and 3/4
    HE_LENGTH=(trainer.epochs="$HE_EPOCHS" "sched.milestones=[$(( (HE_EPOCHS + 1) / 2 )),$(( (3 * HE_EPOCHS + 3) / 4 ))]")
else
    HE_EPOCHS=164 HE_LENGTH=()
fi

if [ "$PHASE" = 1 ]; then
    STEP=${HE_STEP:-graph}
    step_overrides "$STEP" >/dev/null || exit 2
    say "piece 1: $(du -h "$CARRY_PIECE1" | cut -f1), pydeps: $(du -sh "$CARRY_PYDEPS" | cut -f1)"
    rm -f "$CALL1_JSON"
    if [ "$SMOKE" = 1 ]; then
        BENCH=(--device cpu --threads 1 --width 4 --jobs 1 2 --seconds 1 --warmup 2)
        FAKE=(640 200) CAL_EPOCHS=3
    else
        BENCH=(--device cuda --channels-last --jobs 1 2 4 --seconds 4 --warmup 20)
        FAKE=(50000 10000) CAL_EPOCHS=3
    fi
    [ "$STEP" = graph ] && BENCH+=(--cuda-graph)
    [ "$STEP" = compile ] && BENCH+=(--compile)
    say "1. aggregate images/s of 1, 2, 4 processes, He's ResNet-20, $STEP step"
    (cd benchmarks && timeout 60 $PY concurrency.py "${BENCH[@]}" --model he_resnet20 --schemes bn \
        --json "$WORK/concurrency.json") || say "concurrency benchmark failed (exit $?)"
    cp "$WORK/concurrency.json" "$OUTDIR/" 2>/dev/null
    fake_cifar10 "$WORK/fake" "${FAKE[@]}" || exit 1
    calibrate() {  # calibrate STEP: one real run of the preset on random pixels; its wall time in CAL_WALL
        local t=$(date +%s.%N) dir="$WORK/calibration_$1"
        rm -rf "$dir"
        # shellcheck disable=SC2046
        timeout "$2" $PY -m nfbench.cli train experiment=he_cifar10_resnet20 data.root="$WORK/fake" "${COMMON[@]}" \
            $(step_overrides "$1") trainer.epochs=$CAL_EPOCHS logger=none hydra.run.dir="$dir" >"$WORK/calibration_$1.out" 2>&1
        local rc=$?
        CAL_WALL=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
        tail -n $((CAL_EPOCHS + 2)) "$WORK/calibration_$1.out"
        return $rc
    }
    say "2. one real run of the preset with the $STEP step, $CAL_EPOCHS epochs of ${FAKE[0]} random images"
    if ! calibrate "$STEP" 50; then
        say "the $STEP step failed in the preset (above); measuring the eager step instead, for call 2 to train with"
        STEP=eager
        # The graphed step's gains A(n) stand for the eager step's: an underestimate (eager leaves the GPU
        # more gaps for other processes to fill), so the plan errs towards fewer runs.
        calibrate eager 50 || { say "the eager run failed too: no plan"; exit 1; }
    fi
    $PY scripts/gpu_plan.py call1 --concurrency "$WORK/concurrency.json" --calibration "$WORK/calibration_$STEP" \
        --process-wall "$CAL_WALL" --step "$STEP" --out "$CALL1_JSON" "$OUTDIR/he_call1.json" || exit 1
    if [ "${COMPARE_COMPILE:-0}" = 1 ] && [ "$STEP" != compile ] && [ "$SMOKE" != 1 ]; then
        say "3. the compiled step (reduce-overhead), for comparison only"
        calibrate compile 70 && $PY scripts/gpu_plan.py call1 --concurrency "$WORK/concurrency.json" \
            --calibration "$WORK/calibration_compile" --process-wall "$CAL_WALL" --step compile \
            --out "$OUTDIR/he_call1_compile.json"
    fi
    # Call 2's own time: its budget less the data (join, sha256, two conversions side by side: ~20-30 s each
    # on one core of the 2-core development machine) and the report; it plans again with the real figure.
    say "plan for call 2 (570 s, of which ~60 s data and 35 s report and packing):"
    $PY scripts/gpu_plan.py he --call1 "$CALL1_JSON" --seconds 475 --epochs "$HE_EPOCHS" --max-runs "${HE_MAX_RUNS:-4}"
    say "call 1 done; send call 2 now"
    exit 0
fi

# --- PHASE 2 ----------------------------------------------------------------------------------------
BUDGET_S=${BUDGET_S:-570}
DEADLINE=$(( T0 + BUDGET_S - 35 ))  # leaves the report and the packing their time
STEP=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['step'])" "$CALL1_JSON") || exit 1
[ -n "${HE_STEP:-}" ] && [ "$HE_STEP" != "$STEP" ] && say "HE_STEP=$HE_STEP, but call 1 measured $STEP: training with $STEP"
read -r -a STEP_ARGS <<<"$(step_overrides "$STEP")"
[ "${KEEP_RUNS:-0}" = 1 ] || rm -rf "$WORK/runs" "$WORK/dropped" "$WORK/logs"
rm -rf "$WORK/report"
mkdir -p "$WORK/runs"
TARBALL="$WORK/cifar10-lossless-webp.tar.gz"
say "1. data: join, sha256, convert (original pixels and the q75 JPEG twin, side by side)"
if [ ! -f "$WORK/data/cifar-10-batches-py/test_batch" ] || [ ! -f "$WORK/data_q75/cifar-10-batches-py/test_batch" ]; then
    carry_join "$TARBALL" || exit 2
    carry_convert "$TARBALL" "$WORK/data" & c1=$!
    carry_convert "$TARBALL" "$WORK/data_q75" --reencode 75 & c2=$!
    wait $c1 || { say "conversion of the original pixels failed"; exit 2; }
    wait $c2 || say "the q75 twin's conversion failed: run 2 cannot run"
fi
say "data ready"

declare -A ARGS_OF=(
    [he_s0]="data.root=$WORK/data seed=0"
    [he_q75_s0]="data.root=$WORK/data_q75 seed=0"
    [he_s1]="data.root=$WORK/data seed=1"
    [he_s2]="data.root=$WORK/data seed=2"
)
declare -A DIR_OF=(
    [he_s0]=he_cifar10_resnet20_seed0 [he_q75_s0]=he_cifar10_resnet20_jpeg_q75_seed0
    [he_s1]=he_cifar10_resnet20_seed1 [he_s2]=he_cifar10_resnet20_seed2
)
PRIORITY=(he_s0 he_q75_s0 he_s1 he_s2)
[ -f "$WORK/data_q75/cifar-10-batches-py/test_batch" ] || PRIORITY=(he_s0 he_s1 he_s2)
CHOSEN=()
if [ "${KEEP_RUNS:-0}" = 1 ] && compgen -G "$WORK/runs/he_*" >/dev/null; then
    for n in "${PRIORITY[@]}"; do
        d="$WORK/runs/${DIR_OF[$n]}"
        [ -d "$d" ] && ! runs_finished "$d" && CHOSEN+=("$n")
    done
    say "2. KEEP_RUNS=1: resuming ${CHOSEN[*]:-nothing (every kept run is finished)}"
else
    left=$(( DEADLINE - $(date +%s) ))
    say "2. plan: $left s until the deadline"
    plan=$($PY scripts/gpu_plan.py he --call1 "$CALL1_JSON" --seconds "$left" --epochs "$HE_EPOCHS" \
        --max-runs "${HE_MAX_RUNS:-4}") || exit 1
    echo "$plan"
    n=$(sed -n 's/^HE_RUNS=//p' <<<"$plan")
    CHOSEN=("${PRIORITY[@]:0:$n}")
fi

say "3. runs ($STEP step): ${CHOSEN[*]}"
declare -A FROM=()
for n in "${CHOSEN[@]}"; do
    # shellcheck disable=SC2086
    runs_launch "$n" "$WORK/runs/${DIR_OF[$n]}" experiment=he_cifar10_resnet20 ${ARGS_OF[$n]} "${COMMON[@]}" \
        "${STEP_ARGS[@]}" "${HE_LENGTH[@]}"
    FROM[$n]=0
done
last_check=0
while runs_any_alive; do
    now=$(date +%s)
    if [ "$now" -ge "$DEADLINE" ]; then
        say "deadline: stopping what still runs (SIGTERM: checkpoint, exit; KEEP_RUNS=1 resumes)"
        alive=()
        for n in "${CHOSEN[@]}"; do runs_alive "$n" && alive+=("$n"); done
        runs_stop "${alive[@]}"
        break
    fi
    if (( now - last_check >= 10 )); then
        last_check=$now
        alive=() specs=()
        for n in "${CHOSEN[@]}"; do
            runs_alive "$n" && alive+=("$n") && specs+=("${RUN_DIR[$n]}:$HE_EPOCHS:${FROM[$n]}")
        done
        if (( ${#alive[@]} > 1 )); then
            proj=$($PY scripts/gpu_plan.py project --seconds $(( DEADLINE - now )) "${specs[@]}")
            if grep -q ' over$' <<<"$proj"; then
                drop=${alive[-1]}
                say "projected past the deadline:"; echo "$proj"
                say "dropping $drop, the lowest priority still running (its checkpoint kept under dropped/)"
                runs_stop "$drop"
                mkdir -p "$WORK/dropped" && mv "${RUN_DIR[$drop]}" "$WORK/dropped/"
                for k in "${alive[@]}"; do FROM[$k]=$(runs_epochs "${RUN_DIR[$k]}"); done
            fi
        fi
    fi
    (( (now - T0) % 30 < 5 )) && { say "progress"; $PY scripts/gpu_plan.py status "$WORK/runs"; }
    sleep 5
done
for n in "${CHOSEN[@]}"; do wait "${RUN_PID[$n]}" 2>/dev/null; done
say "4. runs ended"
$PY scripts/gpu_plan.py status "$WORK/runs"
for f in "$WORK"/logs/*.out; do echo "== tail of $f"; tail -n 3 "$f"; done

timeout 60 $PY -m nfbench.cli report "$WORK/runs" --out "$WORK/report" --group-by +data.root
cp "$WORK/report/report.md" "$OUTDIR/he_report.md" 2>/dev/null  # its table is in the log above
$PY - "$WORK/runs" <<'EOF'
import json, sys
from pathlib import Path
errors = {}
for result in sorted(Path(sys.argv[1]).glob("*/result.json")):
    r = json.loads(result.read_text())
    print(f"{result.parent.name}: {r['status']}, {r['epochs']}/{r['epochs_planned']} epochs, "
          f"final test error {100 - r['test_top1']:.2f}%")
    if r["status"] == "finished" and "jpeg" not in result.parent.name:
        errors[result.parent.name] = 100 - r["test_top1"]
if errors:
    mean = sum(errors.values()) / len(errors)
    print(f"original pixels, {len(errors)} seed(s): mean final test error {mean:.2f}% against the target 9.25% "
          f"(8.75 + 0.5): {'met' if mean <= 9.25 else 'not met'}")
EOF
cp "$CALL1_JSON" "$OUTDIR/he_call1.json"
runs_pack "$OUTDIR/he_runs.tgz" runs $([ -d "$WORK/report" ] && echo report) $([ -d "$WORK/dropped" ] && echo dropped) logs
ls -la "$OUTDIR"
say "done"
