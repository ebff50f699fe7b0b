# Shared by the paper scripts (sourced, not run): argument parsing, one sweep per preset, the report.
#
#   scripts/<paper>.sh [--slurm] [OVERRIDE ...]
#
# --slurm       submit every grid point as a SLURM job through hydra-submitit-launcher
#               (hydra/launcher=slurm, conf/hydra/launcher/slurm.yaml); the script waits for the
#               jobs, then writes the report.  Set the partition etc. as overrides, e.g.
#               hydra.launcher.partition=gpu hydra.launcher.timeout_min=720.
# OVERRIDE ...  added to every sweep (e.g. trainer.precision=bf16, or seed=0 for a quick look).
# OUT=DIR       where the sweeps and the report go (default outputs/<paper>/<date>).
# NFBENCH_DATA  the folder holding the CIFAR data (torchvision's release; downloaded if missing).
# IMAGENET=DIR  an ImageFolder tree with train/ and val/; the ImageNet presets run only when set.
set -euo pipefail
SCRIPT=$(realpath "$0")
LIB=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$LIB")/.."

# The leading comment block of a file, without the '#'.
header() { sed -n '2,/^[^#]/p' "$1" | grep '^#' | sed 's/^# \{0,1\}//'; }

LAUNCHER=()
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --slurm) LAUNCHER=(hydra/launcher=slurm) ;;
    -h|--help) header "$SCRIPT"; echo; header "$LIB" | sed 1d; exit 0 ;;
    *) EXTRA+=("$arg") ;;
  esac
done
OUT=${OUT:-outputs/$(basename "$SCRIPT" .sh)/$(date +%Y-%m-%d_%H-%M-%S)}

# sweep NAME OVERRIDE...: one `nfbench train -m` into $OUT/NAME.  data.root stays out of the job
# directory names (a path would nest them).
sweep() {
  local name=$1
  shift
  echo "== $name -> $OUT/$name"
  nfbench train -m "$@" ${LAUNCHER[@]+"${LAUNCHER[@]}"} ${EXTRA[@]+"${EXTRA[@]}"} \
    "hydra.sweep.dir=$OUT/$name" 'hydra.job.config.override_dirname.exclude_keys=[data.root]'
}

report() {
  nfbench report "$OUT" --out "$OUT/report"
  echo "report: $OUT/report/report.md"
}
