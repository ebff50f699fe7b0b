#!/usr/bin/env python3
"""Size a GPU call's training runs from what the call before it measured (scripts/gpu_he_cifar10.sh,
scripts/gpu_civitelli_r50.sh): the runs that fit are chosen before they start, and never shortened.

    python scripts/gpu_plan.py call1 --concurrency C.json --calibration RUN_DIR --process-wall S --out CALL1.json
    python scripts/gpu_plan.py he  --call1 CALL1.json --seconds S [--epochs 164] [--max-runs 4]
    python scripts/gpu_plan.py r50 --call1 CALL1.json --seconds S [--min-epochs 30] [--short-epochs 2] ...
    python scripts/gpu_plan.py project --seconds S DIR:PLANNED_EPOCHS:FROM_EPOCH ...
    python scripts/gpu_plan.py status RUNS_DIR

What call 1 measures, and what the plans rest on:
- ``concurrency``: benchmarks/concurrency.py's aggregate images/s of 1, 2, ... processes training the
  same step side by side (trainer.cuda_graph's captured step on a random batch), so A(n) = aggregate(n) /
  aggregate(1) is how much n runs sharing the GPU gain over one; with ``--each-alone``, each scheme's own
  rate too, and A(n) is then against the mean of the n schemes' own rates (a mix of fast and slow
  schemes is not counted as a gain).
- ``calibration``: one real ``nfbench train`` of the run's preset with the same step on CIFAR-shaped
  random pixels (every image of a real epoch, the full test set): its steady epoch's wall time (training,
  evaluation, checkpoint: the differences of metrics.jsonl's wall_s after epoch 1) and the fixed cost
  around its epochs (the process's wall time less its epochs at the steady rate: imports, data, the
  first epoch's capture and cuDNN search).

A run of E epochs beside n-1 others then takes fixed + E x steady x n / A(n), times a margin (MARGIN)
for what the model leaves out (evaluation shares the GPU like training; epochs vary by a few percent).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

MARGIN = 1.08  # epochs of one run on one H200 varied by 5-10% (benchmarks/README.md, section 1)
HE_PRIORITY = ("he_s0", "he_q75_s0", "he_s1", "he_s2")
# ResNet-101 against ResNet-50 per image: Civitelli et al. Table 1's FLOPs (ConvShort 8.92 / 4.2 G; the
# heaviest ratio of the schemes, IdShort's and LearnScalar's is 5.02 / 2.6 = 1.93).
R101_PER_R50 = 8.92 / 4.2


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calibrate(run_dir: Path, process_wall: float) -> dict:
    """A real run's steady epoch wall time and the fixed cost around its epochs (see the docstring)."""
    rows = rows_of(run_dir / "metrics.jsonl")
    walls = [b["wall_s"] - a["wall_s"] for a, b in zip(rows, rows[1:])]
    if not walls:
        raise SystemExit(f"gpu_plan: {run_dir} has {len(rows)} epoch(s); a calibration needs 2 or more")
    steady = statistics.median(walls)
    train_s = statistics.median(r["epoch_s"] for r in rows[1:])
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "run_dir": str(run_dir),
        "status": result.get("status"),
        "epochs": len(rows),
        "steady_epoch_s": steady,
        "steady_train_s": train_s,
        "eval_and_save_s": steady - train_s,
        "images_per_s": statistics.median(r["images_per_s"] for r in rows[1:]),
        "first_epoch_s": rows[0]["wall_s"],
        "process_wall_s": process_wall,
        "fixed_s": max(0.0, process_wall - len(rows) * steady),
    }


def gain(concurrency: dict, n: float) -> float:
    """A(n): n processes' aggregate images/s over what they would do taking turns on the GPU with no
    overlap (the mean of their schemes' rates alone, from --each-alone; else one process's rate),
    interpolated between the measured counts and flat beyond the largest."""
    alone = {a["scheme"]: a["images_per_s"] for a in concurrency.get("alone", [])}
    rows = sorted(concurrency["rows"], key=lambda r: r["jobs"])

    def base(row: dict) -> float:
        if alone and all(s in alone for s in row.get("schemes", [None])):
            return statistics.mean(alone[s] for s in row["schemes"])
        return rows[0]["images_per_s"] / rows[0]["jobs"]

    points = [(r["jobs"], r["images_per_s"] / base(r)) for r in rows]
    if n <= points[0][0]:
        return points[0][1]
    for (n0, a0), (n1, a1) in zip(points, points[1:]):
        if n <= n1:
            return a0 + (a1 - a0) * (n - n0) / (n1 - n0)
    return points[-1][1]


def he_wall(call1: dict, n: int, epochs: int) -> float:
    """Seconds for n He runs of ``epochs`` side by side (each the preset, all started together)."""
    cal = call1["calibration"]
    return MARGIN * (cal["fixed_s"] + epochs * cal["steady_epoch_s"] * n / gain(call1["concurrency"], n))


def he_plan(call1: dict, seconds: float, epochs: int, max_runs: int) -> int:
    """How many of HE_PRIORITY's runs, the first ones, finish inside ``seconds``; at least 1 (run 1 is the
    point of the call: if even it does not fit, the deadline checkpoints it for a rerun)."""
    print(
        f"He runs side by side, {epochs} epochs each, {seconds:.0f} s available "
        f"(steady epoch alone {call1['calibration']['steady_epoch_s']:.2f} s, fixed "
        f"{call1['calibration']['fixed_s']:.1f} s, margin {MARGIN}):"
    )
    fit = 0
    for n in range(1, max_runs + 1):
        wall = he_wall(call1, n, epochs)
        ok = wall <= seconds
        fit = n if ok and fit == n - 1 else fit
        print(
            f"  {n} run(s): A({n}) = {gain(call1['concurrency'], n):.2f}, projected {wall:.0f} s: "
            f"{'fits' if ok else 'does not fit'}  [{', '.join(HE_PRIORITY[:n])}]"
        )
    if fit == 0:
        print("  not even run 1 fits: it runs anyway; the deadline checkpoints it and KEEP_RUNS=1 resumes it")
    return max(1, fit)


def scheme_epoch_s(call1: dict) -> dict[str, float]:
    """Steady epoch seconds of each ResNet-50 arm alone: the calibration run's (convshort), scaled by the
    schemes' own step rates (concurrency --each-alone); bn_conv_shortcut is bn plus ConvShort's 1x1
    shortcuts, costed as bn + (convshort - idshort)."""
    alone = {a["scheme"]: a["images_per_s"] for a in call1["concurrency"]["alone"]}
    base = call1["calibration"]["steady_epoch_s"]
    per = {s: base * alone["convshort"] / r for s, r in alone.items()}
    if {"bn", "convshort", "idshort"} <= per.keys():
        per["bn_conv_shortcut"] = per["bn"] + max(0.0, per["convshort"] - per["idshort"])
    return per


def r50_plan(
    call1: dict,
    seconds: float,
    arms: list[str],
    shorts: list[str],
    min_epochs: int,
    max_epochs: int,
    short_epochs: int,
    optional: list[str],
    slots: int,
) -> tuple[int, list[str], list[str], dict]:
    """The epochs E of every main arm (the same for all, at least ``min_epochs``) and the runs kept.

    ``shorts`` are short runs (NAME = [r101_]SCHEME) of ``short_epochs`` each. The GPU's work is every
    run's steady epochs alone; ``slots`` processes share it at A(slots), one of them the short runs' lane
    (scripts/gpu_civitelli_r50.sh). Runs are dropped, lowest priority
    first, until E reaches ``min_epochs``: the ``optional`` arms, then the ResNet-101 short runs, then the
    ResNet-50 ones; if E still falls short it is ``min_epochs`` anyway, the short runs are all kept, and
    the deadline checkpoints what is left (resumed by a rerun with KEEP_RUNS=1)."""
    per = scheme_epoch_s(call1)
    fixed = call1["calibration"]["fixed_s"]
    a = gain(call1["concurrency"], slots)

    def short_s(name: str) -> float:
        scheme = name.removeprefix("r101_")
        return short_epochs * per[scheme] * (R101_PER_R50 if name.startswith("r101_") else 1.0)

    def epochs_for(main: list[str], short: list[str]) -> int:
        # The main arms run in waves of `slots` - 1 beside the lane of short runs (all `slots` without
        # them); each wave starts with its runs' fixed cost, while the GPU waits for them.
        waves = math.ceil(len(main) / (slots - 1 if short and slots > 1 else slots))
        work = (seconds / MARGIN - waves * fixed) * a - sum(short_s(s) for s in short)
        return int(work // sum(per[m] for m in main)) if work > 0 else 0

    print(
        "ResNet-50 arms, steady epoch alone (s): "
        + ", ".join(f"{s} {per[s]:.2f}" for s in [*arms, *optional] if s in per)
        + f"; fixed {fixed:.1f} s per run; {slots} processes at A = {a:.2f}; {seconds:.0f} s available"
    )
    main, short = [*arms, *optional], list(shorts)
    # What goes first when E falls short: each optional arm (last first), then the ResNet-101 short runs,
    # then the ResNet-50 ones (short runs and arms share scheme names: each drop says which list it is).
    drops = [("main", [o]) for o in reversed(optional)] + [
        ("short", [s for s in short if s.startswith("r101_")]),
        ("short", [s for s in short if not s.startswith("r101_")]),
    ]
    epochs = epochs_for(main, short)
    for which, names in drops:
        if epochs >= min_epochs:
            break
        if names:
            if which == "main":
                main = [m for m in main if m not in names]
            else:
                short = [s for s in short if s not in names]
            epochs = epochs_for(main, short)
            print(f"  dropped {which} {' '.join(names)}: {epochs} epochs fit")
    if epochs < min_epochs:  # the drops did not buy the floor: keep the short runs, which finish first
        short = list(shorts)
        print(
            f"  only {epochs} epochs fit: running {min_epochs} anyway, with every short run (the deadline "
            "may stop the main arms, checkpointed for KEEP_RUNS=1)"
        )
    epochs = max(min_epochs, min(max_epochs, epochs))
    print(
        f"  plan: {epochs} epochs each for {' '.join(main)}; {short_epochs} epoch(s) each for "
        f"{' '.join(short) or 'no short runs'}"
    )
    # Each run's wall time alone on the GPU: a run is not started with less than that left (the plan above
    # fits them all; this catches a pace far below the measured one).
    alone = {**{m: epochs * per[m] for m in main}, **{f"short_{s}": short_s(s) for s in short}}
    estimates = {k: MARGIN * (fixed + v) for k, v in alone.items()}
    return epochs, main, short, estimates


def project(seconds: float, specs: list[str]) -> list[tuple[str, int, int, float]]:
    """For runs in progress (DIR:PLANNED:FROM): (dir, epochs done, planned, seconds still needed at the
    pace of their recent epochs after epoch FROM; nan until two such epochs are done)."""
    out = []
    for spec in specs:
        path, planned, start = spec.rsplit(":", 2)
        metrics = Path(path) / "metrics.jsonl"
        rows = rows_of(metrics) if metrics.exists() else []
        recent = [b["wall_s"] - a["wall_s"] for a, b in zip(rows, rows[1:]) if a["epoch"] >= int(start)][-3:]
        pace = statistics.median(recent) if len(recent) >= 2 else math.nan
        out.append((path, len(rows), int(planned), (int(planned) - len(rows)) * pace))
    return out


def status(runs: Path) -> None:
    for m in sorted(runs.rglob("metrics.jsonl")):
        rows = rows_of(m)
        if rows:
            r = rows[-1]
            print(
                f"  {m.parent.relative_to(runs)}: epoch {r['epoch']}, loss {r['train_loss']:.3f}, test top-1 "
                f"{r['test_top1']:.2f}, {r['images_per_s']:.0f} img/s, {r['epoch_s']:.1f} s/epoch"
            )


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("call1")
    c.add_argument("--concurrency", type=Path, required=True)
    c.add_argument("--calibration", type=Path, required=True)
    c.add_argument("--process-wall", type=float, required=True)
    c.add_argument("--step", required=True, help="the step both measured: the one call 2 trains with")
    c.add_argument("--out", type=Path, nargs="+", required=True)
    h = sub.add_parser("he")
    h.add_argument("--call1", type=Path, required=True)
    h.add_argument("--seconds", type=float, required=True)
    h.add_argument("--epochs", type=int, default=164)
    h.add_argument("--max-runs", type=int, default=len(HE_PRIORITY))
    r = sub.add_parser("r50")
    r.add_argument("--call1", type=Path, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--arms", nargs="+", default=["bn", "convshort", "idshort", "learnscalar"])
    r.add_argument("--optional", nargs="*", default=["bn_conv_shortcut"])
    r.add_argument(
        "--shorts",
        nargs="*",
        default=["convshort", "idshort", "learnscalar", "r101_convshort", "r101_idshort", "r101_learnscalar"],
    )
    r.add_argument("--min-epochs", type=int, default=30)
    r.add_argument("--max-epochs", type=int, default=200)
    r.add_argument("--short-epochs", type=int, default=1)
    r.add_argument("--slots", type=int, default=3)
    j = sub.add_parser("project")
    j.add_argument("--seconds", type=float, required=True, help="seconds left before the deadline")
    j.add_argument("specs", nargs="+")
    s = sub.add_parser("status")
    s.add_argument("runs", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "call1":
        call1 = {
            "step": a.step,
            "concurrency": json.loads(a.concurrency.read_text()),
            "calibration": calibrate(a.calibration, a.process_wall),
        }
        for out in a.out:
            out.write_text(json.dumps(call1, indent=1))
        cal = call1["calibration"]
        print(
            f"calibration ({a.step}): steady epoch {cal['steady_epoch_s']:.2f} s (training "
            f"{cal['steady_train_s']:.2f} s at {cal['images_per_s']:,.0f} img/s, evaluation and checkpoint "
            f"{cal['eval_and_save_s']:.2f} s), fixed {cal['fixed_s']:.1f} s of {cal['process_wall_s']:.1f} s"
        )
    elif a.cmd == "he":
        print(f"HE_RUNS={he_plan(json.loads(a.call1.read_text()), a.seconds, a.epochs, a.max_runs)}")
    elif a.cmd == "r50":
        epochs, main_arms, shorts, est = r50_plan(
            json.loads(a.call1.read_text()),
            a.seconds,
            a.arms,
            a.shorts,
            a.min_epochs,
            a.max_epochs,
            a.short_epochs,
            a.optional,
            a.slots,
        )
        print(
            f"R50_EPOCHS={epochs}\nR50_ARMS='{' '.join(main_arms)}'\nR50_SHORTS='{' '.join(shorts)}'\n"
            f"R50_EST='{' '.join(f'{k}:{v:.0f}' for k, v in est.items())}'"
        )
    elif a.cmd == "project":
        for path, done, planned, need in project(a.seconds, a.specs):
            verdict = "pace unknown" if math.isnan(need) else "over" if need > a.seconds else "ok"
            print(f"{path} {done}/{planned} {need:.0f} {verdict}")
    else:
        status(a.runs)


if __name__ == "__main__":
    main(sys.argv[1:])
