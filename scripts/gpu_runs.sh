# Training runs side by side inside one GPU call (sourced by gpu_he_cifar10.sh and gpu_civitelli_r50.sh,
# from the repository root, with PY, T0 and WORK set): start, watch, stop at a deadline, report, pack.
#
# Each run is `nfbench train ... hydra.run.dir=DIR` in a process session of its own (setsid), so a
# last SIGKILL reaches its data workers too. SIGTERM makes nfbench checkpoint (last.pt, mid-epoch) and exit;
# the same command in the same DIR resumes there, so a rerun with KEEP_RUNS=1 on the still-warm machine
# finishes what a deadline stopped (docs/results-cifar10-gpu.md: the He run of 2026-11-26).

declare -A RUN_PID=() RUN_DIR=()

say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

runs_launch() {  # runs_launch NAME DIR OVERRIDES...
    local name=$1 dir=$2
    shift 2
    mkdir -p "$WORK/logs"
    setsid "$PY" -m nfbench.cli train "$@" hydra.run.dir="$dir" >>"$WORK/logs/$name.out" 2>&1 &
    RUN_PID[$name]=$! RUN_DIR[$name]=$dir
    say "started $name (pid $!): $* hydra.run.dir=$dir"
}

runs_alive() { kill -0 "${RUN_PID[$1]}" 2>/dev/null; }

runs_any_alive() {
    local n
    for n in "${!RUN_PID[@]}"; do runs_alive "$n" && return 0; done
    return 1
}

runs_stop() {  # runs_stop NAME...: SIGTERM (checkpoint and exit), SIGKILL of the session after 20 s
    local n left=20
    # The training process alone: its data workers, stopped first, would fail its next batch before
    # the checkpoint; it ends them itself on its way out.
    for n in "$@"; do kill -TERM "${RUN_PID[$n]}" 2>/dev/null; done
    while (( left-- > 0 )); do
        local alive=0
        for n in "$@"; do runs_alive "$n" && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 1
    done
    for n in "$@"; do kill -KILL -- "-${RUN_PID[$n]}" 2>/dev/null; done
}

runs_finished() { grep -qs '"status": "finished"' "$1/result.json"; }

runs_epochs() {  # epochs a run directory has recorded
    [ -f "$1/metrics.jsonl" ] && grep -c . "$1/metrics.jsonl" || echo 0
}

fake_cifar10() {  # fake_cifar10 ROOT TRAIN TEST: CIFAR-10's python release of random pixels (benchmarks/common.py)
    [ -f "$1/cifar-10-batches-py/batches.meta" ] ||  # batches.meta: written last, and read by data=cifar10
        $PY -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path
from common import write_fake_cifar10; write_fake_cifar10(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))" "$@"
}

runs_pack() {  # runs_pack TGZ PATH...: the small files of WORK's PATHs (no checkpoints, no event files)
    local tgz=$1 p paths=()
    shift
    for p in "$@"; do [ -e "$WORK/$p" ] && paths+=("$p"); done
    tar -czf "$tgz" -C "$WORK" --exclude=checkpoints --exclude=tb --exclude='*.pt' "${paths[@]}"
    say "packed $(du -h "$tgz" | cut -f1) into $tgz"
}
