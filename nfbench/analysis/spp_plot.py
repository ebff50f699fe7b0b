"""Signal propagation plots: one figure per model, every scheme overlaid (Civitelli et al. Fig. 2 and 6).

Forward variance on the left, backward on the right, log y-axis, residual block
depth on x; the stride-2 transitions are marked, because the backward variance
steps there by design (docs/science.md#spp-claim-3).  A Hydra multirun writes one
spp.csv per job; :class:`OverlayCallback` (configured by ``nfbench spp``)
combines them when the sweep ends, and ``nfbench spp-plot DIR ...`` does the
same for any folders, e.g. several sweeps.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nfbench.config import FigureFormat
from nfbench.errors import DataError

log = logging.getLogger("nfbench")

CSV_NAME = "spp.csv"  # what nfbench spp writes into its run directory (nfbench.analysis.spp.write_csv)

# The paper's schemes first and in its order; any other registered scheme follows alphabetically.
PAPER_SCHEMES = ("plain", "bn", "idshort", "learnscalar", "convshort")
WEIGHTS_ORDER = ("he_fanin", "he_fanout", "brock")
# Colour tells the scheme, line style and marker the weights, so the figure survives grey-scale print.
WEIGHT_STYLES = {"he_fanin": (":", "s"), "he_fanout": ("-", "o"), "brock": ("--", "^")}


NEEDED = ("model", "init", "weights", "block", "stride", "seeds", "fwd_var", "bwd_var")  # what plot_model reads


def read_csv(path: Path) -> list[dict]:
    """Rows of a spp.csv with numbers parsed (integers for block, stride and seeds); a truncated or damaged
    file is a DataError naming it and the line."""
    ints, text = {"block", "stride", "seeds"}, {"model", "init", "weights"}
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in NEEDED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path} is not a spp.csv of nfbench spp (no column {', '.join(missing)}): rerun "
                f"nfbench spp for it, or move it out of the folders given"
            )
        for row in reader:
            try:
                rows.append({k: (int(v) if k in ints else v if k in text else float(v)) for k, v in row.items()})
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}, line {reader.line_num}, is truncated or damaged ({list(row.values())}): "
                    f"rerun nfbench spp for that job, or move its spp.csv away"
                ) from None
    return rows


def _curve_order(key: tuple[str, str]) -> tuple:
    init, weights = key
    paper = PAPER_SCHEMES.index(init) if init in PAPER_SCHEMES else len(PAPER_SCHEMES)
    w = WEIGHTS_ORDER.index(weights) if weights in WEIGHTS_ORDER else len(WEIGHTS_ORDER)
    return paper, init, w, weights


def plot_model(
    rows: Sequence[dict], out_stem: Path, formats: Iterable[str] = ("png",), labels: dict[Any, str] | None = None
) -> list[Path]:
    """Draw one model's curves (rows of spp.csv, grouped by ``curve`` or else by (init, weights)).

    Rows may carry a ``curve`` key naming the curve they belong to; ``labels`` maps it to the legend
    text.  Writes ``out_stem.<fmt>`` for each format and returns the paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[Any, list[dict]] = defaultdict(list)
    for r in rows:
        curves[r.get("curve", (r["init"], r["weights"]))].append(r)
    models = sorted({r["model"] for r in rows})
    if len(models) != 1:
        raise ValueError(f"plot_model draws one model, got {models}")
    inits = sorted({r["init"] for r in rows}, key=lambda i: _curve_order((i, "")))
    colours = {init: plt.get_cmap("tab10")(i % 10) for i, init in enumerate(inits)}

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True)
    for key in sorted(curves, key=lambda k: _curve_order((curves[k][0]["init"], curves[k][0]["weights"]))):
        pts = sorted(curves[key], key=lambda r: r["block"])
        init, weights = pts[0]["init"], pts[0]["weights"]
        style, marker = WEIGHT_STYLES.get(weights, ("-.", "d"))
        label = (labels or {}).get(key, f"{init} + {weights}")
        x = [r["block"] for r in pts]
        for ax, stat in zip(axes, ("fwd_var", "bwd_var")):
            ax.plot(x, [r[stat] for r in pts], style, marker=marker, ms=3, lw=1.4, color=colours[init], label=label)
            if max(r["seeds"] for r in pts) > 1:
                ax.fill_between(
                    x,
                    [r[f"{stat}_min"] for r in pts],
                    [r[f"{stat}_max"] for r in pts],
                    color=colours[init],
                    alpha=0.18,
                    lw=0,
                )
    _dress_axes(axes, sorted({r["block"] for r in rows if r["stride"] > 1}))
    seeds = max(r["seeds"] for r in rows)
    note = f", mean and min-max of {seeds} seeds" if seeds > 1 else ""
    fig.suptitle(
        f"{models[0]} at initialisation: per-block signal propagation (grey lines: stride-2 blocks{note})", fontsize=11
    )
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=9, frameon=False)
    rows_of_legend = -(-len(names) // 4)
    fig.tight_layout(rect=(0, 0.045 + 0.045 * rows_of_legend, 1, 1))
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


def _dress_axes(axes: Sequence[Any], transitions: Sequence[int]) -> None:
    """Titles, labels, log scale and grid of the forward and backward panels; a grey line at each stride-2 block."""
    for ax, title, ylabel in zip(
        axes, ("forward: activations", "backward: gradients"), (r"Var$[x_l]$", r"Var$[\partial L / \partial x_l]$")
    ):
        for t in transitions:
            ax.axvline(t, color="0.6", lw=0.8, ls="-", zorder=0)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("residual block (depth)", fontsize=10)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=9)


def plot_dirs(dirs: Sequence[Path], out_dir: Path, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Overlay every spp.csv found under ``dirs``: ``out_dir/spp_<model>.<fmt>``, one figure per model.

    Two jobs with the same (model, init, weights), e.g. a sweep over width or seed, stay separate
    curves labelled by their job folder; for averaged repeats use ``spp.seeds`` instead.
    """
    by_model: dict[str, list[dict]] = defaultdict(list)
    for d in dirs:
        for csv_path in sorted(Path(d).rglob(CSV_NAME)):
            for r in read_csv(csv_path):
                by_model[r["model"]].append({**r, "curve": str(csv_path.parent)})
    if not by_model:
        raise FileNotFoundError(f"no {CSV_NAME} under {', '.join(map(str, dirs))}")
    paths = []
    for model, rows in sorted(by_model.items()):
        jobs: dict[tuple[str, str], set[str]] = defaultdict(set)
        for r in rows:
            jobs[(r["init"], r["weights"])].add(r["curve"])
        labels = {
            r["curve"]: f"{r['init']} + {r['weights']}"
            + (f" ({Path(r['curve']).name})" if len(jobs[(r["init"], r["weights"])]) > 1 else "")
            for r in rows
        }
        paths += plot_model(rows, out_dir / f"spp_{model}", formats, labels)
    return paths


class OverlayCallback(Callback):
    """After ``nfbench spp -m ...``: one overlay figure per model in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        for path in plot_dirs([sweep_dir], sweep_dir, config.spp.formats):
            log.info("signal propagation plot: %s", path)


def main(argv: Sequence[str]) -> None:
    """``nfbench spp-plot DIR [DIR ...] [--out OUT] [--formats png pdf svg]``."""
    parser = argparse.ArgumentParser(
        prog="nfbench spp-plot",
        description=(
            "Overlay the spp.csv files found under the DIRs (e.g. several `nfbench spp -m` sweeps): "
            "one figure per model, spp_<model>.<fmt>."
        ),
    )
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first DIR)")
    parser.add_argument("--formats", nargs="+", default=["png"], choices=[f.value for f in FigureFormat])
    args = parser.parse_args(argv)
    try:
        paths = plot_dirs(args.dirs, args.out or args.dirs[0], args.formats)
    except (FileNotFoundError, DataError) as e:
        parser.exit(2, f"nfbench spp-plot: error: {e}\n")
    for path in paths:
        print(path)
