# The original CIFAR-10 pixels on the GPU machine in two consecutive calls (sourced by gpu_he_cifar10.sh
# and gpu_civitelli_r50.sh, from the repository root, with PY set; run as a command for `prepare`).
#
# ../shared/data/cifar10-lossless-webp.tar.gz (106,342,663 bytes = 101.4 MiB) is larger than one call's
# 64 MiB, so it travels in two pieces of a git-ignored folder (.evidence/, never committed):
#   call 1 carries .evidence/pydeps (hydra, omegaconf, antlr4, the joblib launcher: 1.5 MiB, measured by
#          `prepare`) and piece 1 (50 MiB): with the ~2.8 MiB working tree, ~54 MiB;
#   call 2 carries piece 2 (51.4 MiB): ~54 MiB.
# The machine keeps ignored files only while warm (30 s after a call), so call 2 is sent at once; it
# names only its own piece in `carry` (naming .evidence itself would replace the whole folder there and
# delete piece 1), checks that call 1's files are still there (carry_need_call1, one line in a second
# if not), joins the pieces, checks the tarball's sha256 and converts it (the converter reads the tar.gz
# itself: no unpacked tree of 60,000 small files is written).
#
#   bash scripts/cifar10_carry.sh prepare     # here, once per checkout: pydeps, the two pieces, the sizes
#
# Digests: ../shared/data/README.md (the tarball; the decoded pixels of train and test in sorted path
# order, what scripts/cifar_from_images.py --expect-sha256 checks).

CARRY_TARBALL_SHA256=a1864f19da3f711593e67aba46b0d5d2a24fe437c2e83b41e1dddcb523f64617
CARRY_TRAIN_SHA256=61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b
CARRY_TEST_SHA256=52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d
CARRY_PIECE_MIB=50
CARRY_PIECE1=.evidence/cifar10-lossless-webp.part-aa
CARRY_PIECE2=.evidence/cifar10-lossless-webp.part-ab
CARRY_PYDEPS=.evidence/pydeps
CARRY_LIMIT_MIB=64

_carry_mib() { du -cb "$@" 2>/dev/null | tail -n 1 | awk '{printf "%.1f", $1 / 1048576}'; }

carry_tree_mib() {  # what travels without carry: tracked and untracked-not-ignored files
    git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | awk '{printf "%.1f", $1 / 1048576}'
}

carry_pydeps() {  # the pure-Python hydra, omegaconf, antlr4 and joblib launcher in .evidence/pydeps (git-ignored)
    local site
    git check-ignore -q .evidence/x || { echo "carry: .evidence/ is not git-ignored here: refusing to write into it"; return 2; }
    mkdir -p .evidence
    if [ ! -d "$CARRY_PYDEPS/hydra" ]; then
        site=$($PY -c "import hydra, os; print(os.path.dirname(os.path.dirname(hydra.__file__)))") || return 2
        mkdir -p "$CARRY_PYDEPS/hydra_plugins"
        (cd "$site" && tar -cf - --exclude=__pycache__ hydra omegaconf antlr4 hydra_plugins/hydra_joblib_launcher) |
            tar -xf - -C "$CARRY_PYDEPS" || return 2
    fi
}

carry_prepare() {  # carry_prepare [TARBALL]: here, before the two calls
    local src=${1:-${CIFAR_LOSSLESS:-../shared/data/cifar10-lossless-webp.tar.gz}}
    [ -f "$src" ] || { echo "carry: no tarball at $src (set CIFAR_LOSSLESS)"; return 2; }
    carry_pydeps || return 2
    if [ ! -f "$CARRY_PIECE2" ] || [ "$(stat -c %s "$CARRY_PIECE1")" != $(( CARRY_PIECE_MIB * 1048576 )) ] ||
        [ "$(cat "$CARRY_PIECE1" "$CARRY_PIECE2" | sha256sum | cut -d' ' -f1)" != "$CARRY_TARBALL_SHA256" ]; then
        rm -f .evidence/cifar10-lossless-webp.part-*  # piece 1: the first CARRY_PIECE_MIB, piece 2: the rest
        head -c $(( CARRY_PIECE_MIB * 1048576 )) "$src" >"$CARRY_PIECE1" &&
            tail -c +$(( CARRY_PIECE_MIB * 1048576 + 1 )) "$src" >"$CARRY_PIECE2" || return 2
    fi
    local tree pydeps p1 p2 call1 call2
    tree=$(carry_tree_mib) pydeps=$(_carry_mib "$CARRY_PYDEPS") p1=$(_carry_mib "$CARRY_PIECE1") p2=$(_carry_mib "$CARRY_PIECE2")
    call1=$(awk -v a="$tree" -v b="$pydeps" -v c="$p1" 'BEGIN {printf "%.1f", a + b + c}')
    call2=$(awk -v a="$tree" -v c="$p2" 'BEGIN {printf "%.1f", a + c}')
    echo "carry: tree $tree MiB, pydeps $pydeps MiB, piece 1 $p1 MiB, piece 2 $p2 MiB"
    echo "carry: call 1 = tree + pydeps + piece 1 = $call1 MiB; call 2 = tree + piece 2 = $call2 MiB (limit $CARRY_LIMIT_MIB)"
    awk -v a="$call1" -v b="$call2" -v l="$CARRY_LIMIT_MIB" 'BEGIN {exit !(a < l - 4 && b < l - 4)}' ||
        { echo "carry: a call would be within 4 MiB of the limit"; return 2; }
    git status --porcelain --ignored=no | grep -q '\.evidence' && { echo "carry: .evidence shows in git status"; return 2; }
    return 0
}

carry_need_call1() {  # carry_need_call1 FILE...: call 2 only; call 1's pieces and FILEs, else one line and 3
    local f
    for f in "$CARRY_PIECE1" "$CARRY_PYDEPS/hydra/__init__.py" "$@"; do
        if [ ! -e "$f" ]; then
            echo "call 1's $f is not on this machine (it went cold between the calls, or call 1 did not run): run call 1 again, then call 2 at once"
            return 3
        fi
    done
    [ -f "$CARRY_PIECE2" ] || { echo "call 2 must carry $CARRY_PIECE2"; return 3; }
}

carry_need_call1_carry() {  # call 1 only: its two carried paths
    [ -f "$CARRY_PIECE1" ] && [ -d "$CARRY_PYDEPS/hydra" ] ||
        { echo "call 1 must carry $CARRY_PYDEPS and $CARRY_PIECE1 (bash scripts/cifar10_carry.sh prepare, here)"; return 3; }
}

carry_join() {  # carry_join TARBALL: the two pieces joined and checked; 0 or a line and 2
    cat "$CARRY_PIECE1" "$CARRY_PIECE2" >"$1" || return 2
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$CARRY_TARBALL_SHA256" ] || { echo "carry: joined tarball sha256 $got, expected $CARRY_TARBALL_SHA256"; return 2; }
    echo "carry: joined $(_carry_mib "$1") MiB, sha256 $got (the data README's)"
}

carry_convert() {  # carry_convert TARBALL ROOT [--reencode Q]: CIFAR-10's python release in ROOT
    [ -f "$2/cifar-10-batches-py/test_batch" ] && { echo "carry: $2 already converted"; return 0; }
    local tarball=$1 root=$2
    shift 2
    if [ $# = 0 ]; then  # the original pixels: refused unless they are the data README's, bit for bit
        $PY scripts/cifar_from_images.py "$tarball" "$root" --expect-sha256 "$CARRY_TRAIN_SHA256" "$CARRY_TEST_SHA256"
    else
        $PY scripts/cifar_from_images.py "$tarball" "$root" "$@"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run as a command
    set -uo pipefail
    cd "$(dirname "$0")/.."
    PY=${PYTHON:-python3}
    case "${1:-}" in
        prepare) shift; carry_prepare "$@" ;;
        *) echo "usage: bash scripts/cifar10_carry.sh prepare [TARBALL]"; exit 2 ;;
    esac
fi
