#!/usr/bin/env bash
# Issue 12, item 6: the CPU-scale CIFAR-10 study that should separate the schemes (docs/results-cifar10-cpu.md
# was too small: its seed spread swamped every difference).  Real CIFAR-10 (the JPEGs, converted once by
# scripts/cifar_from_images.py), ResNet-20 at its published width 16, a fixed 10,000-image training subset,
# the full 10,000-image test set, Civitelli et al.'s recipe (SGD lr 0.01, momentum 0.9, batch 128, cosine
# per epoch, crop + flip), 3 seeds, one thread per run, several runs at once; then `nfbench report`.
#
# Arms (7 x 3 seeds = 21 runs):
#   bn                       the standard pre-activation BatchNorm ResNet
#   bn_conv_shortcut         BatchNorm with ConvShort's 1x1 shortcut in every block (item 3)
#   idshort, learnscalar     Civitelli et al.'s schemes, He fan-out
#   convshort                the paper's method, He fan-out everywhere (the stem too: Var 0.375 out)
#   convshort_brock          the same block with Brock's weights
#   convshort_stem_he_fanin  the stem ablation (item 2): ConvShort with a He fan-in stem (Var 2.0 out)
#
#   scripts/cpu_study.sh                        # the study, on this machine's CPUs
#   STUDY_DEVICE=cuda scripts/cpu_study.sh      # the same 21 runs on a GPU
#   STUDY_EPOCHS=1 STUDY_TRAIN=256 STUDY_TEST=256 STUDY_WIDTH=4 scripts/cpu_study.sh   # a pilot
#
# Environment (defaults in brackets):
#   STUDY_DEVICE  trainer.device of every run [cpu]
#   STUDY_JOBS    runs at once [the CPU count on cpu, 4 on a GPU]
#   STUDY_EPOCHS  epochs per run [7: about 85 CPU-minutes in all, see below]
#   STUDY_TRAIN   training images [10000]; STUDY_TEST test images [null: all 10,000]
#   STUDY_WIDTH   stage-1 width [16]; STUDY_WD weight decay [0, the paper's]; STUDY_SEEDS ["0 1 2"]
#   STUDY_ARMS    arm names to run, space-separated [all seven]
#   OUT           the study folder [outputs/cpu_study/<date>]: runs/<arm>/seed<k>/, logs/, report/
#   DATA          where the converted CIFAR-10 goes or is [$OUT/../cifar10]; JPEGS the source tar.gz
#                 [../shared/data/cifar10-jpeg.tar.gz, beside the repository]
# Sizing (measured on the 2-core development machine, one thread per run, load average 2.5-4.9 from other
# work): a ResNet-20 (width 16) run costs 4.5 CPU-s of start-up and 34 CPU-s per epoch (10,000 training
# and 10,000 test images; ConvShort and BatchNorm + conv shortcuts alike), so 21 runs x (4.5 + 34 x 7) s
# = 5,090 CPU-s = 85 CPU-minutes, about 43 minutes of wall time on 2 idle cores (8 epochs: 97).
# A run already finished is skipped and an interrupted one resumes from its last.pt, so rerunning the
# same command with the same OUT completes a study.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${STUDY_DEVICE:-cpu}
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc reports OMP_NUM_THREADS when it is set
if [[ $DEVICE == cpu ]]; then JOBS=${STUDY_JOBS:-$CPUS}; else JOBS=${STUDY_JOBS:-4}; fi
EPOCHS=${STUDY_EPOCHS:-7}
TRAIN=${STUDY_TRAIN:-10000}
TEST=${STUDY_TEST:-null}
WIDTH=${STUDY_WIDTH:-16}
WD=${STUDY_WD:-0.0}
SEEDS=${STUDY_SEEDS:-0 1 2}
OUT=${OUT:-outputs/cpu_study/$(date +%Y-%m-%d_%H-%M-%S)}
DATA=${DATA:-$(dirname "$OUT")/cifar10}
JPEGS=${JPEGS:-../shared/data/cifar10-jpeg.tar.gz}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-python3}

declare -A ARM=(
  [bn]="init=bn"
  [bn_conv_shortcut]="init=bn_conv_shortcut"
  [idshort]="init=idshort"
  [learnscalar]="init=learnscalar"
  [convshort]="init=convshort"
  [convshort_brock]="init=convshort init.weights=brock"
  [convshort_stem_he_fanin]="init=convshort init.stem_weights=he_fanin"
)
ORDER=(bn bn_conv_shortcut idshort learnscalar convshort convshort_brock convshort_stem_he_fanin)
read -r -a ARMS <<< "${STUDY_ARMS:-${ORDER[*]}}"
for a in "${ARMS[@]}"; do [[ -n ${ARM[$a]+x} ]] || { echo "unknown arm '$a'; choose from ${ORDER[*]}" >&2; exit 2; }; done

if [[ ! -f $DATA/cifar-10-batches-py/test_batch ]]; then
  $PY scripts/cifar_from_images.py "$JPEGS" "$DATA"
fi

COMMON=(data=cifar10 "data.root=$DATA" data.download=false "data.train_subset=$TRAIN" "data.test_subset=$TEST"
        model=resnet20 "model.width=$WIDTH" optim=sgd optim.lr=0.01 optim.momentum=0.9 "optim.weight_decay=$WD"
        sched=cosine data.batch_size=128 "trainer.epochs=$EPOCHS" "trainer.device=$DEVICE" trainer.progress=false)

mkdir -p "$OUT/logs" "$OUT/runs"
{ echo "started $(date -Is) on $(hostname): $CPUS CPUs, $JOBS runs at once, device $DEVICE"
  echo "load: $(cat /proc/loadavg)"
  echo "common: ${COMMON[*]}"; } | tee -a "$OUT/machine.txt"

# One line per run: NAME SEED OVERRIDES...; xargs keeps $JOBS of them going.
for seed in $SEEDS; do
  for a in "${ARMS[@]}"; do echo "$a $seed ${ARM[$a]}"; done
done > "$OUT/runs.txt"

run_one() {
  local name=$1 seed=$2; shift 2
  local dir=$OUT/runs/$name/seed$seed
  if grep -qs '"status": "finished"' "$dir/result.json"; then echo "done already: $name seed $seed"; return 0; fi
  local t0=$SECONDS
  $PY -m nfbench.cli train "${COMMON[@]}" "$@" "seed=$seed" "hydra.run.dir=$dir" \
    > "$OUT/logs/$name-seed$seed.log" 2>&1 || { echo "FAILED: $name seed $seed (see $OUT/logs)"; return 0; }
  echo "finished: $name seed $seed in $((SECONDS - t0)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
}
export -f run_one
export OUT PY
export COMMON_STR="${COMMON[*]}"
# COMMON holds no spaces inside a value, so it travels to the xargs children as one string.
xargs -P "$JOBS" -L 1 bash -c 'read -r -a COMMON <<< "$COMMON_STR"; run_one "$@"' _ < "$OUT/runs.txt"

echo "ended $(date -Is); load: $(cat /proc/loadavg)" | tee -a "$OUT/machine.txt"
$PY -m nfbench.cli report "$OUT/runs" --out "$OUT/report" --format png
echo "report: $OUT/report/report.md"
