"""``nfbench report DIR...``: turn run directories into the papers' tables and figures.

Plain functions, each usable on its own:

- :func:`collect` finds every training run directory under the given paths (single runs,
  multirun trees, finished, diverged or still running) and reads it into a :class:`Run`;
- :func:`aggregate` groups runs by configuration over seeds with pandas: a DataFrame, one row per group,
  with counts by status, and mean and sample std of each figure over the finished seeds;
- :func:`write_table` writes that table as Markdown and CSV, with reference numbers beside ours;
- :func:`plot_curves` draws Civitelli et al.'s Fig. 3/4: train and test top-1 per epoch,
  the seeds' mean as a line and their std as a band, one colour per scheme.

Which pixels each row trained and tested on is its ``data_copy`` (the run's data fingerprint, named
when it is a known copy: "original", "JPEG copy", ...; nfbench/data/fingerprint.py): it is always a group
key, so seeds on different pixels are never averaged together, and the published CIFAR-10 numbers
stand only beside runs on the original pixels.

The headline is the final test top-1 (the last epoch's).  Runs with a validation split
(``data.val_size``) add the best validation top-1 and the test top-1 at that epoch (the epoch of
``best.pt``); a best selected on the test set (``best_test_top1``, runs without validation) is
optimistic and is not shown.  Statistics of accuracy are over *finished* runs that hold the number: a
diverged run has no final accuracy (it is counted in ``diverged``), an unfinished one has not reached
it yet (counted in ``unfinished``), an invalid sweep point was refused before training (counted in
``invalid`` and listed with its error under the table), and a run whose files contradict themselves
(a result.json that cannot be read, or that says finished without a test top-1) is counted in
``excluded`` and listed with why.  A run directory whose config.yaml or metrics.jsonl cannot be read
is skipped, with a line saying why.  Curves use every run that has reached an epoch, diverged ones excepted, as
the paper leaves a diverging scheme's curve out of its figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import yaml

from nfbench import rundir
from nfbench.analysis.tables import format_table
from nfbench.data.fingerprint import UNKNOWN, copy_label
from nfbench.errors import RunDirectoryError

# Short names for the axes a sweep varies; any other dotted config key works as well.
ALIASES = {
    "data": "data.name",
    "model": "model.name",
    "width": "model.width",
    "init": "init.name",
    "weights": "init.weights",
    "epochs": "trainer.epochs",
}
# ``data_copy``: which pixels (nfbench.data.fingerprint.copy_label); a group never mixes copies (:func:`group_keys`).
DATA_COPY = "data_copy"
DEFAULT_GROUP_BY = ("experiment", "data", DATA_COPY, "model", "width", "init", "weights")
# The config key each scheme alias also reads (:func:`scheme_label`): its groups are kept apart by it already.
VARIANT_KEYS = {"init": "init.conv_shortcut", "weights": "init.stem_weights"}
# Keys that legitimately differ between the seeds of one group and say nothing about the science.
BOOKKEEPING = (
    "seed",
    "data.root",
    "data.num_workers",
    "data.download",
    "data.verify",
    "trainer.run_dir",
    "trainer.resume",
    "trainer.progress",
    "trainer.device",
    "trainer.log_every",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.progress_every_s",
    "trainer.checkpoint_every_steps",
    "trainer.log_spp_every",
    "logger.",
)  # a key ending in "." stands for its whole group
FINISHED, DIVERGED, UNFINISHED, INVALID, EXCLUDED = "finished", "diverged", "unfinished", "invalid", "excluded"
STATUSES = (FINISHED, DIVERGED, UNFINISHED, INVALID, EXCLUDED)
# The table's figures (mean and std over a group's finished runs), from the result.json keys they read.
FIGURES = {
    "final_test_top1": "test_top1",
    "best_val_top1": "best_val_top1",
    "test_top1_at_best_val": "test_top1_at_best_val",
    "final_train_top1": "train_top1",
    "wall_s": "wall_s",
}
RUN_MARKERS = ("result.json", "metrics.jsonl", "env.json")


@dataclass
class Run:
    """One training run directory, as read from disk."""

    path: Path
    config: dict
    metrics: list[dict]
    result: Optional[dict]
    problem: Optional[str] = None  # why its files cannot be counted (:func:`read_run`)
    fingerprint: Optional[dict] = None  # the data it trained on: result.json's, else env.json's (a run going)

    @property
    def status(self) -> str:
        """finished, diverged or invalid (a sweep point refused before training) as result.json says;
        excluded when its files contradict themselves (``problem``); anything else (no result yet, a
        preempted job waiting for its requeue) is unfinished."""
        if self.problem is not None:
            return EXCLUDED
        status = self.result.get("status") if self.result is not None else None
        return status if status in (FINISHED, DIVERGED, INVALID) else UNFINISHED

    def get(self, key: str) -> Any:
        """A grouping key's value: an alias (``init``), ``experiment`` or a dotted config key.  ``init``
        and ``weights`` name the scheme's variant too (:func:`scheme_label`), so the groups keep it apart."""
        if key in ("init", "weights"):
            return scheme_label(self, key)
        if key == DATA_COPY:
            return copy_label(self.fingerprint)
        node: Any = self.config
        for part in ALIASES.get(key, key).split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def scheme_label(run: Run, key: str) -> Optional[str]:
    """``init``: init.name, as ``bn_conv_shortcut`` (conf/init/bn_conv_shortcut.yaml) with init.conv_shortcut;
    ``weights``: the weight rule, with ``, stem RULE`` when init.stem_weights gives the stem conv another."""
    init = run.config.get("init", {})
    if key == "init":
        return f"{init.get('name')}_conv_shortcut" if init.get("conv_shortcut") else init.get("name")
    weights, stem = resolved_weights(run), init.get("stem_weights")
    return f"{weights}, stem {stem}" if stem is not None and stem != weights else weights


def resolved_weights(run: Run) -> Optional[str]:
    """The weight rule a run used: result.json records it; for a run still going, the config's
    ``init.weights`` or, when that is null, the scheme's default (so both land in one group)."""
    if run.result is not None and run.result.get("weights"):
        return run.result["weights"]
    init = run.config.get("init", {})
    from nfbench.errors import ConfigError
    from nfbench.schemes import weight_rule

    try:
        return weight_rule(init.get("name"), init.get("weights"))
    except ConfigError:  # a scheme this version does not know: keep the run, without a weight rule
        return None


class Unreadable(Exception):
    """A run directory whose config or history cannot be read: skipped by the report, which says why."""


def read_run(path: Path) -> Optional[Run]:
    """Read one run directory; None when it holds no training config.  Its files are written atomically,
    so what cannot be read is damage, not a write in progress (a torn final line of metrics.jsonl, which
    a crash leaves, is dropped): a config.yaml or a metrics line that cannot be read raises
    :class:`Unreadable`; a result.json that cannot be read, or that says finished without a test top-1,
    marks the run as excluded (:attr:`Run.problem`)."""
    try:
        config = rundir.read_config(path)
    except Exception as e:
        raise Unreadable(f"config.yaml cannot be read ({_why(e)})") from None
    if config is None or "trainer" not in config:
        return None
    try:
        metrics = rundir.read_metrics(path / "metrics.jsonl")
    except RunDirectoryError as e:
        raise Unreadable(f"metrics.jsonl cannot be read ({e})") from None
    result = rundir.read_json(path / "result.json", strict=False)
    problem = None
    if (path / "result.json").exists() and not isinstance(result, dict):
        problem, result = "result.json cannot be read (truncated or damaged)", None
    elif isinstance(result, dict) and result.get("status") == FINISHED and result.get("test_top1") is None:
        problem = "result.json says finished but holds no test_top1"
    env = rundir.read_json(path / "env.json", strict=False)
    fingerprint = next(
        (f.get("data_fingerprint") for f in (result, env) if isinstance(f, dict) and f.get("data_fingerprint")), None
    )
    return Run(path, config, metrics, result, problem, fingerprint)


def _why(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


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
    """All training runs under ``paths`` that can be read, in path order (:func:`collect_all`)."""
    return collect_all(paths)[0]


def collect_all(paths: Iterable[Path | str]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All training runs under ``paths``, in path order, and the run directories that cannot be read,
    with why (:class:`Unreadable`)."""
    runs, skipped = [], []
    for d in find_run_dirs(Path(p) for p in paths):
        try:
            run = read_run(d)
        except Unreadable as e:
            skipped.append((d, str(e)))
            continue
        if run is not None:
            runs.append(run)
    return runs, skipped


def _flatten(d: dict) -> dict[str, str]:
    """Dotted keys with comparable (JSON-text) values."""
    return {k: json.dumps(v, sort_keys=True) for k, v in rundir.flatten(d).items()}


def _mixed(members: Sequence[Run], group_by: Sequence[str]) -> list[str]:
    """Config keys (besides the group's, seed and bookkeeping) whose values differ between the runs of a
    group.  An invalid point never ran: its config says nothing about the runs beside it."""
    flat = [_flatten(r.config) for r in members if r.status != INVALID]
    skip = {ALIASES.get(k, k) for k in group_by} | {VARIANT_KEYS.get(k) for k in group_by} | set(BOOKKEEPING)
    groups = tuple(b for b in BOOKKEEPING if b.endswith("."))
    return sorted(
        k
        for k in set().union(*flat)
        if k not in skip and not k.startswith(groups) and len({f.get(k) for f in flat}) > 1
    )


def _mean(values: pd.Series) -> float:
    """statistics.fmean of the values present: exactly rounded, where pandas' own mean may differ in the
    last digit from the numbers earlier reports printed."""
    present = values.dropna()
    return statistics.fmean(present) if len(present) else math.nan


def _std(values: pd.Series) -> float:
    """Sample standard deviation (n - 1, statistics.stdev) of the values present; undefined (NaN) for one."""
    present = values.dropna()
    return statistics.stdev(present) if len(present) > 1 else math.nan


def runs_frame(runs: Sequence[Run], group_by: Sequence[str]) -> pd.DataFrame:
    """One row per run: ``group`` (its values of ``group_by`` as JSON text, so that null and lists
    group too), status, seed, planned epochs, result.json's figures (NaN where absent) and the Run."""
    return pd.DataFrame(
        {
            "group": [json.dumps(values) for values in _group_values(runs, group_by)],
            "status": [r.status for r in runs],
            "seed": pd.Series([r.get("seed") for r in runs], dtype=object),
            "epochs": pd.Series([r.get("epochs") for r in runs], dtype=object),
            **{
                name: pd.Series([(r.result or {}).get(key) for r in runs], dtype=float) for name, key in FIGURES.items()
            },
            "run": pd.Series(list(runs), dtype=object),
        }
    )


def _group_values(runs: Sequence[Run], group_by: Sequence[str]) -> list[list]:
    """Each run's values of ``group_by``.  An invalid sweep point loaded no data, so it has no data copy of its
    own: it takes the one copy of the runs that agree with it on every other key (where there is one copy),
    and is listed beside them."""
    values = [[r.get(k) for k in group_by] for r in runs]
    if DATA_COPY not in group_by:
        return values
    at = list(group_by).index(DATA_COPY)
    copies: dict[str, set] = {}
    for r, v in zip(runs, values):
        if r.status != INVALID:
            copies.setdefault(json.dumps(v[:at] + v[at + 1 :]), set()).add(v[at])
    for r, v in zip(runs, values):
        found = copies.get(json.dumps(v[:at] + v[at + 1 :]), set())
        if r.status == INVALID and len(found) == 1:
            v[at] = next(iter(found))
    return values


def group_keys(group_by: Sequence[str]) -> list[str]:
    """``group_by`` with ``data_copy`` after ``data`` when it is missing: seeds are never averaged over runs
    on different pixels (other data fingerprints), whatever keys are asked for."""
    keys = list(group_by)
    if DATA_COPY not in keys:
        keys.insert(keys.index("data") + 1 if "data" in keys else 0, DATA_COPY)
    return keys


def aggregate(runs: Sequence[Run], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> pd.DataFrame:
    """Group runs by the values of ``group_by`` (in the order they first appear) and summarise each
    group over its seeds: one row per group with its key values, ``seeds`` (finished runs), ``diverged``,
    ``unfinished``, ``invalid``, ``excluded``, ``epochs`` (planned, when the runs agree), FIGURE_mean and FIGURE_std
    over the finished runs, ``seed_values``, ``mixed_keys`` (see :func:`_mixed`), ``references``
    (empty until :func:`attach_references`) and ``runs``."""
    group_by = group_keys(group_by)
    per_run = runs_frame(runs, group_by)
    order = per_run["group"].unique()
    counts = (
        pd.crosstab(per_run["group"], per_run["status"])
        .reindex(index=order, columns=list(STATUSES), fill_value=0)
        .rename(columns={FINISHED: "seeds"})
    )
    planned = per_run[per_run["status"] != INVALID].groupby("group", sort=False)["epochs"]
    epochs = planned.first().where(planned.nunique(dropna=False) == 1).reindex(order).astype("Int64")
    stats = (
        per_run[per_run["status"] == FINISHED]
        .groupby("group", sort=False)
        .agg(**{f"{name}_{stat}": (name, how) for name in FIGURES for stat, how in (("mean", _mean), ("std", _std))})
    )
    members = per_run.groupby("group", sort=False)["run"].agg(list).reindex(order)
    keys = pd.DataFrame([json.loads(g) for g in order], index=order, columns=list(group_by), dtype=object)
    table = pd.concat(
        [
            keys,
            counts,
            epochs.rename("epochs"),
            stats.reindex(order).drop(columns="wall_s_std"),
            members.map(lambda rs: sorted(r.get("seed") for r in rs)).rename("seed_values"),
            members.map(lambda rs: _mixed(rs, group_by)).rename("mixed_keys"),
            members.map(lambda rs: []).rename("references"),
            members.rename("runs"),
        ],
        axis=1,
    )
    # A group key named like a figure (--group-by epochs) is that figure: one column.
    return table.loc[:, ~table.columns.duplicated()].reset_index(drop=True)


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


def attach_references(table: pd.DataFrame, refs: Sequence[dict]) -> pd.DataFrame:
    """``table`` with each group's ``references``: those that match its runs."""
    return table.assign(
        references=table["runs"].map(lambda runs: [ref for ref in refs if _matches(runs[0], ref["match"])])
    )


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if pd.notna(std) else f"{mean:.2f}"


def _duration(seconds: float) -> str:
    if pd.isna(seconds):
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _label(row: pd.Series, group_by: Sequence[str]) -> str:
    return " / ".join(f"{row[k]}" for k in group_by if row[k] is not None)


def _joined(values: Iterable[Any]) -> Optional[str]:
    return ";".join(str(v) for v in values) or None


MARKDOWN_FIGURES = {
    "final_test_top1": "final test top-1 (%)",
    "best_val_top1": "best val top-1 (%)",
    "test_top1_at_best_val": "test top-1 at best val (%)",
    "final_train_top1": "final train top-1 (%)",
}
COUNTS = ("seeds", "diverged", "unfinished", "invalid", "excluded", "epochs")


def markdown_table(table: pd.DataFrame, group_by: Sequence[str], skipped: Sequence[tuple[Path, str]] = ()) -> str:
    """The Markdown table and, below it, the invalid and excluded runs, the run directories skipped
    (``skipped``: path and why), groups whose runs differ in other keys, and the sources of the
    reference numbers it cites."""
    group_by = group_keys(group_by)
    shown = pd.concat(
        [
            table[list(dict.fromkeys([*group_by, *COUNTS]))],
            pd.DataFrame(
                {
                    title: [_pm(m, s) for m, s in zip(table[f"{name}_mean"], table[f"{name}_std"])]
                    for name, title in MARKDOWN_FIGURES.items()
                }
            ),
            pd.DataFrame(
                {
                    "wall / run": table["wall_s_mean"].map(_duration),
                    "reference top-1 (%)": table["references"].map(
                        lambda refs: ", ".join(f"{r['test_top1']:.2f} [{r['id']}]" for r in refs) or None
                    ),
                }
            ),
        ],
        axis=1,
    )
    notes = [
        "",
        "Mean ± sample standard deviation over the finished seeds; diverged, unfinished, invalid and "
        "excluded runs are counted, not averaged. Final test top-1: the last epoch's. Best val top-1: the highest "
        "top-1 over epochs on the validation split held out of the training set (data.val_size), and test "
        "top-1 at best val: the test top-1 of that epoch (best.pt's); '-' for runs without a validation split.",
    ]
    notes += [
        f"- Invalid: {r.path}: {r.result['error']}" for runs in table["runs"] for r in runs if r.status == INVALID
    ]
    notes += [f"- Excluded: {r.path}: {r.problem}" for runs in table["runs"] for r in runs if r.status == EXCLUDED]
    notes += [f"- Skipped: {path}: {why}" for path, why in skipped]
    notes += [
        f"- Warning: the runs of `{_label(row, group_by)}` also differ in {', '.join(row['mixed_keys'])}; "
        f"add those keys to --group-by to separate them."
        for _, row in table.iterrows()
        if row["mixed_keys"]
    ]
    cited = {ref["id"]: ref for refs in table["references"] for ref in refs}
    notes += [f"- [{ref['id']}] {ref['source']}: {ref['setting']}." for ref in cited.values()]
    return "\n".join([format_table(shown, markdown=True), *notes]) + "\n"


def csv_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the CSV holds it: lists joined with ';', the references' top-1 and ids, no Run objects."""
    return table.drop(columns=["runs", "references", "mixed_keys", "seed_values"]).assign(
        seed_values=table["seed_values"].map(_joined),
        reference_test_top1=table["references"].map(lambda refs: _joined(r["test_top1"] for r in refs)),
        reference_ids=table["references"].map(lambda refs: _joined(r["id"] for r in refs)),
        mixed_keys=table["mixed_keys"].map(_joined),
    )


def write_table(
    table: pd.DataFrame, group_by: Sequence[str], out_dir: Path, skipped: Sequence[tuple[Path, str]] = ()
) -> dict[str, Path]:
    """Write ``report.md`` and ``report.csv`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "report.md", out_dir / "report.csv"
    md.write_text(markdown_table(table, group_by, skipped))
    csv_table(table).to_csv(csv_path, index=False, lineterminator="\r\n")
    return {"markdown": md, "csv": csv_path}


def epoch_curve(runs: Sequence[Run], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch (1-based): mean and std of ``key`` over the runs that reached it; diverged runs
    are left out, and so are missing and non-finite values.  A single run gives a zero-width band."""
    points = pd.DataFrame(
        [(int(m["epoch"]), m.get(key)) for r in runs if r.status not in (DIVERGED, EXCLUDED) for m in r.metrics],
        columns=["epoch", "value"],
    ).astype({"value": float})
    curve = points[np.isfinite(points["value"])].groupby("epoch")["value"].agg(mean=_mean, std=_std)
    return curve.index.tolist(), curve["mean"].tolist(), curve["std"].fillna(0.0).tolist()


SCHEME_KEYS = ("init", "weights", "init.name", "init.weights")
# Keys that tell the curves of one figure apart: the scheme, and the data copy (the original pixels beside a
# JPEG copy of the same recipe, in one panel).
CURVE_KEYS = (DATA_COPY, *SCHEME_KEYS)


def _figure_groups(
    table: pd.DataFrame, group_by: Sequence[str]
) -> Iterator[tuple[list[tuple[str, Any]], pd.DataFrame]]:
    """One figure per combination of the group keys other than the scheme (init, weights) and the data copy:
    Civitelli et al. draw one panel per architecture with every scheme in it.  Yields the figure's
    (key, value) pairs and its rows of ``table``."""
    fig_keys = [k for k in group_by if k not in CURVE_KEYS]
    labels = pd.Series([json.dumps([row[k] for k in fig_keys]) for _, row in table.iterrows()], index=table.index)
    for label, rows in table.groupby(labels, sort=False):
        yield list(zip(fig_keys, json.loads(label))), rows


def _slug(parts: Iterable[Any]) -> str:
    text = "_".join(str(p) for p in parts if p is not None) or "runs"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def plot_curves(
    table: pd.DataFrame, group_by: Sequence[str], out_dir: Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Civitelli et al. Fig. 3/4: train (left) and test (right) top-1 against epoch; per scheme
    the seeds' mean as a line and +- one std as a band; references as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    group_by = group_keys(group_by)
    curve_keys = [k for k in group_by if k in CURVE_KEYS]
    for fig_key, fig_rows in _figure_groups(table, group_by):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        colours = plt.get_cmap("tab10")
        for i, (_, row) in enumerate(fig_rows.iterrows()):
            name = " + ".join(str(row[k]) for k in curve_keys if row[k] not in (None, UNKNOWN)) or _label(row, group_by)
            dead = f", {row['diverged']} diverged" if row["diverged"] else ""
            for ax, metric in zip(axes, ("train_top1", "test_top1")):
                epochs, mean, std = epoch_curve(row["runs"], metric)
                if not epochs:
                    continue
                lo = [m - s for m, s in zip(mean, std)]
                hi = [m + s for m, s in zip(mean, std)]
                n = len(row["runs"]) - row["diverged"] - row["invalid"] - row["excluded"]
                ax.plot(epochs, mean, color=colours(i % 10), label=f"{name} (n={n}{dead})")
                ax.fill_between(epochs, lo, hi, color=colours(i % 10), alpha=0.2, linewidth=0)
            for ref in row["references"]:
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


def report(
    paths: Sequence[Path | str],
    out_dir: Path,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    references: Optional[Path] = None,
    formats: Sequence[str] = ("png",),
) -> dict[str, Any]:
    """collect -> aggregate -> attach references -> table and curves; returns the runs, the table and file paths."""
    runs, skipped = collect_all(paths)
    for path, why in skipped:
        print(f"nfbench report: skipped {path}: {why}", file=sys.stderr)
    if not runs:
        raise FileNotFoundError(
            f"nfbench report: no training run directories under {', '.join(map(str, paths))} "
            f"that can be read (a run directory holds config.yaml and metrics.jsonl or result.json)"
        )
    table = attach_references(aggregate(runs, group_by), load_references(references))
    files = write_table(table, group_by, out_dir, skipped)
    figures = plot_curves(table, group_by, out_dir, formats)
    return {"runs": runs, "skipped": skipped, "table": table, **files, "figures": figures}


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
        "and train/test accuracy curves per epoch (mean line, std band, one colour per scheme).",
    )
    p.add_argument("dirs", nargs="+", type=Path, help="run directories or trees of them (e.g. outputs/multirun/...)")
    p.add_argument("--out", type=Path, help="output folder (default: the first DIR's report/, e.g. DIR/report)")
    p.add_argument(
        "--group-by",
        nargs="+",
        metavar="KEY",
        help=f"keys that define a group (default: {' '.join(DEFAULT_GROUP_BY)}); aliases "
        f"{', '.join(ALIASES)}, or any dotted config key (optim.lr); +KEY adds to the default",
    )
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
