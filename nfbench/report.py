"""``nfbench report DIR...``: turn run directories into the papers' tables and figures.

Plain functions, each usable on its own:

- :func:`collect` finds every training run directory under the given paths (single runs,
  multirun trees, finished, diverged or still running) and reads it into a :class:`Run`;
- :func:`aggregate` groups runs by configuration over seeds and computes mean and std;
- :func:`write_table` writes the table as Markdown and CSV, with reference numbers beside ours;
- :func:`plot_curves` draws Civitelli et al.'s Fig. 3/4: train and test top-1 per epoch,
  the seeds' mean as a line and their std as a band, one colour per scheme.

The headline is the final test top-1 (the last epoch's).  Runs with a validation split
(``data.val_size``) add the best validation top-1 and the test top-1 at that epoch (the epoch of
``best.pt``); a best selected on the test set (``best_test_top1``, runs without validation) is
optimistic and is not shown.  Statistics of accuracy are over *finished* runs: a diverged run has no final
accuracy (it is counted in ``diverged``), an unfinished one has not reached it yet (counted
in ``unfinished``), and an invalid sweep point was refused before training (counted in ``invalid``
and listed with its error under the table).  Curves use every run that has reached an epoch, diverged ones excepted, as
the paper leaves a diverging scheme's curve out of its figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml

# Short names for the axes a sweep varies; any other dotted config key works as well.
ALIASES = {"data": "data.name", "model": "model.name", "width": "model.width", "init": "init.name",
           "weights": "init.weights", "epochs": "trainer.epochs"}
DEFAULT_GROUP_BY = ("experiment", "data", "model", "width", "init", "weights")
# Keys that legitimately differ between the seeds of one group and say nothing about the science.
BOOKKEEPING = ("seed", "data.root", "data.num_workers", "data.download", "data.verify", "trainer.run_dir",
               "trainer.resume", "trainer.progress", "trainer.device", "trainer.log_every", "trainer.compile",
               "trainer.compile_mode", "trainer.progress_every_s", "trainer.checkpoint_every_steps",
               "trainer.log_spp_every", "logger.")  # a key ending in "." stands for its whole group
FINISHED, DIVERGED, UNFINISHED, INVALID = "finished", "diverged", "unfinished", "invalid"
RUN_MARKERS = ("result.json", "metrics.jsonl", "env.json")


@dataclass
class Run:
    """One training run directory, as read from disk."""

    path: Path
    config: dict
    metrics: list[dict]
    result: Optional[dict]

    @property
    def status(self) -> str:
        """finished, diverged or invalid (a sweep point refused before training) as result.json says;
        anything else (no result yet, a preempted job waiting for its requeue) is unfinished."""
        status = self.result.get("status") if self.result is not None else None
        return status if status in (FINISHED, DIVERGED, INVALID) else UNFINISHED

    def get(self, key: str) -> Any:
        """A grouping key's value: an alias (``init``), ``experiment`` or a dotted config key."""
        if key == "weights":
            return resolved_weights(self)
        node: Any = self.config
        for part in ALIASES.get(key, key).split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def resolved_weights(run: Run) -> Optional[str]:
    """The weight rule a run used: result.json records it; for a run still going, the config's
    ``init.weights`` or, when that is null, the scheme's default (so both land in one group)."""
    if run.result is not None and run.result.get("weights"):
        return run.result["weights"]
    init = run.config.get("init", {})
    if init.get("weights"):
        return init["weights"]
    from nfbench.errors import ConfigError
    from nfbench.schemes import SCHEMES

    try:
        return SCHEMES.get(init.get("name")).default_weights
    except ConfigError:  # a scheme this version does not know: keep the run, without a weight rule
        return None


def _load_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    cfg = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError:  # .hydra/config.yaml may hold ${hydra:...}, which needs Hydra
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or caught mid-write by a run on another node
        return None


def _read_metrics(path: Path) -> list[dict]:
    from nfbench.rundir import parse_metrics

    try:
        text = path.read_text()
    except OSError:  # absent
        return []
    return parse_metrics(path, text, strict=False)  # a running job's last line may be half-written


def read_run(path: Path) -> Optional[Run]:
    """Read one run directory; None when it holds no training config."""
    for cfg_path in (path / "config.yaml", path / ".hydra" / "config.yaml"):
        if cfg_path.is_file():
            config = _load_yaml(cfg_path)
            break
    else:
        return None
    if "trainer" not in config:
        return None
    return Run(path, config, _read_metrics(path / "metrics.jsonl"), _read_json(path / "result.json"))


def _natural(p: Path) -> list:
    """Hydra numbers sweep jobs 0, 1, ..., 10 without padding: order 2 before 10, so the table
    follows the grid's order."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Every directory under ``paths`` that a training run wrote (it holds result.json,
    metrics.jsonl or env.json); the search does not descend into run directories."""
    found: list[Path] = []

    def walk(d: Path) -> None:
        if any((d / m).is_file() for m in RUN_MARKERS):
            found.append(d)
            return
        for child in sorted((p for p in d.iterdir() if p.is_dir() and not p.is_symlink()), key=_natural):
            walk(child)

    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"nfbench report: {p} is not a directory")
        walk(p)
    return found


def collect(paths: Iterable[Path | str]) -> list[Run]:
    """All training runs under ``paths``, in path order."""
    runs = (read_run(d) for d in find_run_dirs(Path(p) for p in paths))
    return [r for r in runs if r is not None]


def _flatten(d: dict) -> dict[str, str]:
    """Dotted keys with comparable (JSON-text) values."""
    from nfbench.rundir import flatten

    return {k: json.dumps(v, sort_keys=True) for k, v in flatten(d).items()}


def _mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (n - 1); the std of a single run is undefined."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _present(runs: Sequence[Run], key: str) -> list[float]:
    """``key`` of each run's result.json that has it (older runs and runs without validation have none)."""
    return [r.result[key] for r in runs if r.result is not None and r.result.get(key) is not None]


@dataclass
class Row:
    """One group of runs that differ only in their seed."""

    key: dict[str, Any]
    runs: list[Run]
    finished: int = 0
    diverged: int = 0
    unfinished: int = 0
    invalid: int = 0
    seeds: list[int] = field(default_factory=list)
    epochs: Optional[int] = None
    final_top1: tuple[Optional[float], Optional[float]] = (None, None)  # the last epoch's test top-1
    # Selected on the validation split: its best top-1, and the test top-1 at that epoch (runs without one: None).
    best_val_top1: tuple[Optional[float], Optional[float]] = (None, None)
    test_top1_at_best_val: tuple[Optional[float], Optional[float]] = (None, None)
    train_top1: tuple[Optional[float], Optional[float]] = (None, None)
    wall_s: Optional[float] = None
    # Config keys (besides seed and bookkeeping) whose values differ inside the group.
    mixed: list[str] = field(default_factory=list)
    references: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " / ".join(f"{v}" for v in self.key.values() if v is not None)


def aggregate(runs: Sequence[Run], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> list[Row]:
    """Group runs by the values of ``group_by`` and summarise each group over its seeds."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(json.dumps(r.get(k)) for k in group_by), []).append(r)
    rows = []
    for key, members in groups.items():
        done = [r for r in members if r.status == FINISHED]
        # An invalid point never ran: its config says nothing about the runs beside it.
        ran = [r for r in members if r.status != INVALID]
        flat = [_flatten(r.config) for r in ran]
        skip = {ALIASES.get(k, k) for k in group_by} | set(BOOKKEEPING)
        mixed = sorted(k for k in set().union(*flat) if k not in skip and not k.startswith(tuple(
            b for b in BOOKKEEPING if b.endswith("."))) and len({f.get(k) for f in flat}) > 1)
        planned = {r.get("epochs") for r in ran}
        rows.append(Row(
            key={k: json.loads(v) for k, v in zip(group_by, key)},
            runs=members,
            finished=len(done),
            diverged=sum(r.status == DIVERGED for r in members),
            unfinished=sum(r.status == UNFINISHED for r in members),
            invalid=sum(r.status == INVALID for r in members),
            seeds=sorted(r.get("seed") for r in members),
            epochs=planned.pop() if len(planned) == 1 else None,
            final_top1=_mean_std([r.result["test_top1"] for r in done]),
            best_val_top1=_mean_std(_present(done, "best_val_top1")),
            test_top1_at_best_val=_mean_std(_present(done, "test_top1_at_best_val")),
            train_top1=_mean_std([r.result["train_top1"] for r in done]),
            wall_s=statistics.fmean(r.result["wall_s"] for r in done) if done else None,
            mixed=mixed,
        ))
    return rows


def load_references(path: Optional[Path] = None) -> list[dict]:
    """Published numbers to set beside ours (nfbench/references.yaml unless ``path``)."""
    text = path.read_text() if path else resources.files("nfbench").joinpath("references.yaml").read_text()
    refs = yaml.safe_load(text)["references"]
    for ref in refs:
        # Papers on CIFAR publish error rates; the table compares top-1 accuracy.
        if "test_top1" not in ref:
            ref["test_top1"] = round(100.0 - ref["test_error"], 4)
    return refs


def _matches(run: Run, match: dict) -> bool:
    """Every ``match`` key (``data``, ``model``, ``init``, ``weights`` or a dotted config key) equals
    the run's value, or lists it."""
    return all(run.get(k) in v if isinstance(v, list) else run.get(k) == v for k, v in match.items())


def attach_references(rows: Sequence[Row], refs: Sequence[dict]) -> None:
    """Give each row the references that match its runs."""
    for row in rows:
        row.references = [ref for ref in refs if _matches(row.runs[0], ref["match"])]


def _pm(ms: tuple[Optional[float], Optional[float]]) -> str:
    mean, std = ms
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _ref_text(ref: dict) -> str:
    return f"{ref['test_top1']:.2f} [{ref['id']}]"


def table_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The table as plain records (the CSV's rows): group keys, counts, statistics, references."""
    out = []
    for row in rows:
        rec: dict[str, Any] = dict(row.key)
        rec.update({
            "seeds": row.finished, "diverged": row.diverged, "unfinished": row.unfinished, "invalid": row.invalid,
            "epochs": row.epochs,
            "final_test_top1_mean": row.final_top1[0], "final_test_top1_std": row.final_top1[1],
            "best_val_top1_mean": row.best_val_top1[0], "best_val_top1_std": row.best_val_top1[1],
            "test_top1_at_best_val_mean": row.test_top1_at_best_val[0],
            "test_top1_at_best_val_std": row.test_top1_at_best_val[1],
            "final_train_top1_mean": row.train_top1[0], "final_train_top1_std": row.train_top1[1],
            "wall_s_mean": row.wall_s,
            "seed_values": ";".join(str(s) for s in row.seeds),
            "reference_test_top1": ";".join(f"{r['test_top1']}" for r in row.references) or None,
            "reference_ids": ";".join(r["id"] for r in row.references) or None,
            "mixed_keys": ";".join(row.mixed) or None,
        })
        out.append(rec)
    return out


def markdown_table(rows: Sequence[Row], group_by: Sequence[str]) -> str:
    """The Markdown table and, below it, the sources of the reference numbers it cites."""
    head = [*group_by, "seeds", "diverged", "unfinished", "invalid", "epochs", "final test top-1 (%)",
            "best val top-1 (%)", "test top-1 at best val (%)", "final train top-1 (%)", "wall / run",
            "reference top-1 (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cited: dict[str, dict] = {}
    for row in rows:
        for ref in row.references:
            cited[ref["id"]] = ref
        cells = ["-" if row.key[k] is None else str(row.key[k]) for k in group_by]
        cells += [str(row.finished), str(row.diverged), str(row.unfinished), str(row.invalid),
                  "-" if row.epochs is None else str(row.epochs), _pm(row.final_top1), _pm(row.best_val_top1),
                  _pm(row.test_top1_at_best_val), _pm(row.train_top1), _duration(row.wall_s),
                  ", ".join(_ref_text(r) for r in row.references) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Mean ± sample standard deviation over the finished seeds; diverged, unfinished and invalid runs "
             "are counted, not averaged. Final test top-1: the last epoch's. Best val top-1: the highest top-1 "
             "over epochs on the validation split held out of the training set (data.val_size), and test "
             "top-1 at best val: the test top-1 of that epoch (best.pt's); '-' for runs without a validation split."]
    for row in rows:
        notes += [f"- Invalid: {r.path}: {r.result['error']}" for r in row.runs if r.status == INVALID]
    for row in rows:
        if row.mixed:
            notes.append(f"- Warning: the runs of `{row.label}` also differ in {', '.join(row.mixed)}; "
                         f"add those keys to --group-by to separate them.")
    for ref in cited.values():
        notes.append(f"- [{ref['id']}] {ref['source']}: {ref['setting']}.")
    return "\n".join(lines + notes) + "\n"


def write_table(rows: Sequence[Row], group_by: Sequence[str], out_dir: Path) -> dict[str, Path]:
    """Write ``report.md`` and ``report.csv`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "report.md", out_dir / "report.csv"
    md.write_text(markdown_table(rows, group_by))
    records = table_records(rows)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]) if records else list(group_by))
        w.writeheader()
        w.writerows(records)
    return {"markdown": md, "csv": csv_path}


def epoch_curve(runs: Sequence[Run], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch (1-based): mean and std of ``key`` over the runs that reached it; diverged runs
    are left out.  A single run gives a zero-width band."""
    by_epoch: dict[int, list[float]] = {}
    for r in runs:
        if r.status == DIVERGED:
            continue
        for m in r.metrics:
            v = m.get(key)
            if v is not None and math.isfinite(v):
                by_epoch.setdefault(int(m["epoch"]), []).append(v)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


SCHEME_KEYS = ("init", "weights", "init.name", "init.weights")


def _figure_groups(rows: Sequence[Row], group_by: Sequence[str]) -> dict[tuple, list[Row]]:
    """One figure per combination of the group keys other than the scheme (init, weights):
    Civitelli et al. draw one panel per architecture with every scheme in it.  Keys are
    (key, value) pairs."""
    fig_keys = [k for k in group_by if k not in SCHEME_KEYS]
    out: dict[tuple, list[Row]] = {}
    for row in rows:
        out.setdefault(tuple((k, row.key[k]) for k in fig_keys), []).append(row)
    return out


def _slug(parts: Iterable[Any]) -> str:
    text = "_".join(str(p) for p in parts if p is not None) or "runs"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def plot_curves(rows: Sequence[Row], group_by: Sequence[str], out_dir: Path,
                formats: Sequence[str] = ("png",)) -> list[Path]:
    """Civitelli et al. Fig. 3/4: train (left) and test (right) top-1 against epoch; per scheme
    the seeds' mean as a line and +- one std as a band; references as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    scheme_keys = [k for k in group_by if k in SCHEME_KEYS]
    for fig_key, fig_rows in _figure_groups(rows, group_by).items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        colours = plt.get_cmap("tab10")
        for i, row in enumerate(fig_rows):
            name = " + ".join(str(row.key[k]) for k in scheme_keys if row.key[k] is not None) or row.label
            dead = f", {row.diverged} diverged" if row.diverged else ""
            for ax, metric in zip(axes, ("train_top1", "test_top1")):
                epochs, mean, std = epoch_curve(row.runs, metric)
                if not epochs:
                    continue
                lo = [m - s for m, s in zip(mean, std)]
                hi = [m + s for m, s in zip(mean, std)]
                n = len(row.runs) - row.diverged - row.invalid
                ax.plot(epochs, mean, color=colours(i % 10), label=f"{name} (n={n}{dead})")
                ax.fill_between(epochs, lo, hi, color=colours(i % 10), alpha=0.2, linewidth=0)
            for ref in row.references:
                axes[1].axhline(ref["test_top1"], color=colours(i % 10), linestyle="--", linewidth=1)
        for ax, title in zip(axes, ("train", "test")):
            ax.set_title(f"{title} accuracy")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("top-1 (%)")
        axes[1].legend(fontsize=8, loc="lower right")
        fig.suptitle(", ".join(f"{k}={v}" for k, v in fig_key if v is not None))
        fig.tight_layout()
        stem = "curves_" + _slug(v for _, v in fig_key)
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, dpi=100)
            written.append(path)
        plt.close(fig)
    return written


def report(paths: Sequence[Path | str], out_dir: Path, group_by: Sequence[str] = DEFAULT_GROUP_BY,
           references: Optional[Path] = None, formats: Sequence[str] = ("png",)) -> dict[str, Any]:
    """collect -> aggregate -> attach references -> table and curves; returns rows and file paths."""
    runs = collect(paths)
    if not runs:
        raise FileNotFoundError(f"nfbench report: no training run directories under {', '.join(map(str, paths))} "
                                f"(a run directory holds config.yaml and metrics.jsonl or result.json)")
    rows = aggregate(runs, group_by)
    attach_references(rows, load_references(references))
    files = write_table(rows, group_by, out_dir)
    figures = plot_curves(rows, group_by, out_dir, formats)
    return {"runs": runs, "rows": rows, **files, "figures": figures}


def parse_group_by(values: Optional[Sequence[str]]) -> list[str]:
    """``--group-by`` replaces the default keys; keys written ``+key`` are added to them."""
    if not values:
        return list(DEFAULT_GROUP_BY)
    added = [v[1:] for v in values if v.startswith("+")]
    given = [v for v in values if not v.startswith("+")]
    return [*(given or DEFAULT_GROUP_BY), *added]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(
        prog="nfbench report",
        description="Summarise training runs: a table (Markdown + CSV) of final test top-1 and, with a validation "
                    "split, the best validation top-1 and the test top-1 at its epoch, mean ± std over seeds, "
                    "diverged/unfinished counts, epochs and wall time, with published reference numbers; "
                    "and train/test accuracy curves per epoch (mean line, std band, one colour per scheme).")
    p.add_argument("dirs", nargs="+", type=Path, help="run directories or trees of them (e.g. outputs/multirun/...)")
    p.add_argument("--out", type=Path, help="output folder (default: the first DIR's report/, e.g. DIR/report)")
    p.add_argument("--group-by", nargs="+", metavar="KEY",
                   help=f"keys that define a group (default: {' '.join(DEFAULT_GROUP_BY)}); aliases "
                        f"{', '.join(ALIASES)}, or any dotted config key (optim.lr); +KEY adds to the default")
    p.add_argument("--references", type=Path, help="a references YAML file instead of nfbench's own")
    p.add_argument("--format", nargs="+", default=["png"], choices=["png", "pdf", "svg"], help="figure formats")
    args = p.parse_args(argv)
    group_by = parse_group_by(args.group_by)
    out_dir = args.out or args.dirs[0] / "report"  # beside the runs it describes, wherever the command ran
    try:
        out = report(args.dirs, out_dir, group_by, args.references, args.format)
    except FileNotFoundError as e:
        print(f"{e}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(out["markdown"].read_text())
    print(f"\nwrote {out['markdown']}, {out['csv']} and {len(out['figures'])} figure(s) in {out_dir}")
