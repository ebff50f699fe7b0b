#!/usr/bin/env bash
# Paper-scale evidence on one GPU, in one call of at most ~9 minutes (docs/results-cifar10-gpu.md):
#   1. aggregate images/s of 1, 2, 4, 8 training processes sharing the GPU (benchmarks/concurrency.py);
#   2. side by side, on all 50,000 CIFAR-10 training images:
#      - He et al. 2016a's ResNet-20 + BatchNorm, the full recipe (experiment=he_cifar10_resnet20:
#        64k iterations), compiled with CUDA graphs (torch.compile mode="reduce-overhead");
#      - Civitelli et al.'s ResNet-18 comparison at full width (experiment=civitelli_cifar10_resnet18):
#        bn, idshort, learnscalar, convshort with their He defaults, and convshort with Brock's init,
#        one seed each, as many epochs as the measured throughput fits in the time left;
#   3. `nfbench report` over all runs; run files without checkpoints packed for the repository.
#
#   bash scripts/gpu_evidence.sh                      # on the GPU machine, from the repository root
#   NFBENCH_SMOKE=1 bash scripts/gpu_evidence.sh      # CPU rehearsal: tiny images, models, epochs
#   PARTS=he HE_RUNS="eager compiled compiled@50" HE_EPOCHS=60 bash scripts/gpu_evidence.sh
#       # He's recipe at 60 epochs (lr / 10 after 30 and 45), eager and compiled side by side, and compiled
#       # on the JPEGs passed once more through JPEG at quality 50
#
# Environment: OUT (what comes back: log, concurrency.json, runs.tgz; default outputs/gpu_evidence),
# EVIDENCE_WORK (run directories and data; default /tmp/nfbench-evidence), BUDGET_S (wall seconds
# for the whole script; default 525), PARTS (which of bench, he, r18 to run; default all three),
# HE_RUNS (He runs side by side, each eager or compiled (CUDA graphs), @Q: on the images re-encoded at
# JPEG quality Q; default compiled), HE_EPOCHS (the He schedule shortened to this many epochs, lr / 10
# at 1/2 and 3/4 of them; default the paper's 164),
# KEEP_RUNS (1: keep and resume the run directories of an earlier call), CIFAR_JPEG (the CIFAR-10 JPEG tarball; default
# .evidence/cifar10-jpeg.tar.gz, else ../shared/data/cifar10-jpeg.tar.gz).
# On a machine without network access or nfbench installed, hydra-core, omegaconf, antlr4 and
# hydra-joblib-launcher travel as pure-Python copies in .evidence/pydeps (benchmarks/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
SMOKE=${NFBENCH_SMOKE:-0}
BUDGET_S=${BUDGET_S:-$([ "$SMOKE" = 1 ] && echo 900 || echo 525)}
OUTDIR=${OUT:-outputs/gpu_evidence}
WORK=${EVIDENCE_WORK:-/tmp/nfbench-evidence}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR" "$WORK"
[ "${KEEP_RUNS:-0}" = 1 ] || rm -rf "$WORK/runs"  # KEEP_RUNS=1: a rerun resumes the runs a deadline stopped
rm -rf "$WORK/report"
LOG="$OUTDIR/evidence.log"
exec > >(tee "$LOG") 2>&1
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(elapsed) s] $*"; }

# --- Dependencies and data -------------------------------------------------------------------
. scripts/device_env.sh
export OMP_NUM_THREADS=2
TARBALL=${CIFAR_JPEG:-.evidence/cifar10-jpeg.tar.gz}
[ -f "$TARBALL" ] || TARBALL=../shared/data/cifar10-jpeg.tar.gz
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } 2>/dev/null
$PY -c "import torch, torchvision, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.cuda.is_available(), os.cpu_count(), 'CPU cores')"
DATA="$WORK/data"
[ -f "$DATA/cifar-10-batches-py/test_batch" ] || $PY scripts/cifar_from_images.py "$TARBALL" "$DATA" || exit 1
HE_RUNS=${HE_RUNS:-compiled}
for q in $(tr ' ' '\n' <<<"$HE_RUNS" | grep -o '@[0-9]*' | tr -d @ | sort -u); do
    [ -f "$WORK/data_q$q/cifar-10-batches-py/test_batch" ] ||
        $PY scripts/cifar_from_images.py "$TARBALL" "$WORK/data_q$q" --reencode "$q" || exit 1
done
say "data ready in $DATA (re-encoded copies: $(ls -d "$WORK"/data_q* 2>/dev/null | tr '\n' ' '))"

COMMON=(data.root="$DATA" data.download=false data.test_batch_size=500 trainer.progress=false
        trainer.channels_last=true)
if [ "$SMOKE" = 1 ]; then
    COMMON+=(trainer.device=cpu data.train_subset=640 data.test_subset=200 model.width=4)
    BENCH=(--device cpu --threads 1 --model resnet18 --width 4 --jobs 1 2 --seconds 2 --warmup 1)
    HE_EPOCHS=4
    R20_COMPILE=()
    [ "${SMOKE_COMPILE:-0}" = 1 ] && R20_COMPILE=(trainer.compile=true trainer.compile_mode=reduce-overhead)
    TRAIN_IMAGES=640 TEST_IMAGES=200 MAX_EPOCHS=2
else
    BENCH=(--device cuda --model resnet18 --precision bf16 --channels-last --jobs 1 2 4 8 --seconds 6)
    R20_COMPILE=(trainer.compile=true trainer.compile_mode=reduce-overhead)
    TRAIN_IMAGES=50000 TEST_IMAGES=10000 MAX_EPOCHS=200
fi
PARTS=${PARTS:-bench he r18}
has() { [[ " $PARTS " == *" $1 "* ]]; }
JOBS=$(has r18 && echo 6 || echo 1)  # running side by side: He's ResNet-20 and the five ResNet-18 runs
DEADLINE=$(( T0 + BUDGET_S - 40 ))  # leaves time for the report and the packing

# --- 1. Concurrency -------------------------------------------------------------------------
if has bench; then
    say "1. aggregate images/s of concurrent training processes"
    timeout 150 $PY benchmarks/concurrency.py "${BENCH[@]}" --json "$OUTDIR/concurrency.json"
fi

# --- 2. Size the ResNet-18 runs from the measured throughput --------------------------------
# A job's rate when $JOBS share the GPU (interpolated between the measured job counts), less 15%
# for RandAugment's batches from workers (benchmarks/README.md), an evaluation costing a third of
# a training image, and 40 s of start-up (data, cuDNN's search); 10% spare.
epochs_for() {  # epochs_for SECONDS -> epochs of one ResNet-18 job that fit in SECONDS
    $PY - "$OUTDIR/concurrency.json" "$1" "$JOBS" "$TRAIN_IMAGES" "$TEST_IMAGES" "$MAX_EPOCHS" <<'EOF'
import json, sys
import numpy as np
path, seconds, jobs, n_train, n_test, cap = sys.argv[1], *map(float, sys.argv[2:])
try:
    rows = json.load(open(path))["rows"]
    aggregate = float(np.interp(jobs, [r["jobs"] for r in rows], [r["images_per_s"] for r in rows]))
except (OSError, ValueError, KeyError):
    aggregate = 12000.0 * jobs ** 0.5  # no measurement: a cautious guess (one job ~12k images/s)
per_job = aggregate / jobs
epoch_s = (n_train / 0.85 + n_test / 3) / per_job
print(max(1, min(int(cap), int(0.9 * (seconds - 40) / epoch_s))))
EOF
}
if has r18; then
    R18_EPOCHS=$(epochs_for $(( DEADLINE - $(date +%s) )))
    say "2. ResNet-18 runs: $R18_EPOCHS epochs each (of the paper's schedule length: cosine over $R18_EPOCHS epochs)"
fi

# --- 3. The runs, side by side ---------------------------------------------------------------
RUNS="$WORK/runs"
mkdir -p "$RUNS"
PIDS=()
launch() {  # launch NAME ARGS...: a process group of its own, so a deadline can stop all of it
    local name=$1
    shift
    setsid "$PY" -m nfbench.cli train "$@" >"$WORK/$name.out" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
    say "started $name (pid $!): $*"
}
HE=()
[ -n "${HE_EPOCHS:-}" ] && HE=(trainer.epochs="$HE_EPOCHS"
                              "sched.milestones=[$(( (HE_EPOCHS + 1) / 2 )),$(( (3 * HE_EPOCHS + 2) / 4 ))]")
PID_he=
if has he; then
    for v in $HE_RUNS; do  # eager | compiled, optionally @Q
        mode=${v%@*} q=$([[ $v == *@* ]] && echo "${v#*@}")
        [[ $mode == eager || $mode == compiled ]] || { say "HE_RUNS: $v is not eager or compiled[@Q]"; exit 2; }
        args=("${COMMON[@]}" experiment=he_cifar10_resnet20 seed=0 "${HE[@]}")
        [ $mode = compiled ] && args+=("${R20_COMPILE[@]}")
        [ -n "$q" ] && args+=(data.root="$WORK/data_q$q")
        dir=he_cifar10_resnet20${HE_EPOCHS:+_e$HE_EPOCHS}$([ $mode = eager ] && echo _eager)${q:+_jpeg_q$q}
        [ "$HE_RUNS" = compiled ] && [ -z "${HE_EPOCHS:-}" ] && dir=he_cifar10_resnet20  # the default: one run
        launch "he_${mode}${q}" "${args[@]}" hydra.run.dir="$RUNS/$dir"
    done
    # The default's one compiled run of the paper's recipe, if it fails, is rerun eagerly (below).
    [ "$HE_RUNS" = compiled ] && [ -z "${HE_EPOCHS:-}" ] && PID_he=${PID_hecompiled:-}
fi
if has r18; then
    R18=(-m experiment=civitelli_cifar10_resnet18 "${COMMON[@]}" trainer.precision=bf16 seed=0
         trainer.epochs="$R18_EPOCHS" data.num_workers=2 hydra/launcher=parallel
         'hydra.sweep.subdir=${hydra.job.num}_${init.name}_${init.weights}')  # all overrides: a name too long
    launch civitelli "${R18[@]}" init=bn,idshort,learnscalar,convshort init.weights=null hydra.launcher.n_jobs=4 \
        hydra.sweep.dir="$RUNS/civitelli_cifar10_resnet18/he_default"
    launch brock "${R18[@]}" init=convshort init.weights=brock hydra.launcher.n_jobs=1 \
        hydra.sweep.dir="$RUNS/civitelli_cifar10_resnet18/brock"
fi

status() {  # one line per run directory: epochs done, last test top-1
    $PY - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
for m in sorted(Path(sys.argv[1]).rglob("metrics.jsonl")):
    rows = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
    if rows:
        r = rows[-1]
        print(f"  {m.parent.relative_to(sys.argv[1])}: epoch {len(rows)}, test top-1 {r['test_top1']:.2f}, "
              f"{r['images_per_s']:.0f} img/s, {r['epoch_s']:.1f} s/epoch")
EOF
}
HE_CHECKED=0
while :; do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    # A compiled He run that fails (compilation, CUDA graphs) is rerun eagerly, as long as time allows.
    if [ $HE_CHECKED = 0 ] && [ -n "$PID_he" ] && ! kill -0 "$PID_he" 2>/dev/null; then
        HE_CHECKED=1
        wait "$PID_he"
        he_rc=$?
    fi
    if [ $HE_CHECKED = 1 ] && [ "$he_rc" != 0 ] && [ ${#R20_COMPILE[@]} != 0 ]; then
        HE_CHECKED=2
        left=$(( DEADLINE - $(date +%s) ))
        e=$(epochs_for $left)
        e=$(( e > 164 ? 164 : e ))
        say "the compiled He run failed (see he_compiled.out below); rerunning it eagerly for $e epochs, schedule scaled"
        tail -n 20 "$WORK/he_compiled.out"
        launch he_eager "${COMMON[@]}" experiment=he_cifar10_resnet20 seed=0 trainer.epochs="$e" \
            "sched.milestones=[$(( (e + 1) / 2 )),$(( (3 * e + 2) / 4 ))]" hydra.run.dir="$RUNS/he_cifar10_resnet20_eager"
    fi
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        say "deadline: stopping what still runs (SIGTERM checkpoints and exits)"
        for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
        sleep 15
        for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
        break
    fi
    sleep 5
    if (( $(elapsed) % 30 < 5 )); then say "progress"; status; fi
done
wait "${PIDS[@]}" 2>/dev/null  # not a bare wait: that also waits for the log's tee
say "3. runs ended"
status
for f in "$WORK"/*.out; do echo "== tail of $f"; tail -n 4 "$f"; done

# --- 4. Report and the files that come back -------------------------------------------------
$PY -m nfbench.cli report "$RUNS" --out "$WORK/report" $([ "$HE_RUNS" != compiled ] && echo --group-by +data.root +trainer.compile)  # not seeds of one run
cat "$WORK/report"/*.md 2>/dev/null
tar -czf "$OUTDIR/runs.tgz" -C "$WORK" --exclude=checkpoints --exclude=tb runs report
cp "$WORK"/*.out "$OUTDIR/" 2>/dev/null
ls -la "$OUTDIR"
say "done"
