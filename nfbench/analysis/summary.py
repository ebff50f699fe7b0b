"""``nfbench summary``: parameters and FLOPs of the configured model, per stage and in total.

FLOPs are 2 x multiply-accumulates as ``torch.utils.flop_counter`` counts them
(convolutions and linear layers; additions, activations and norms count 0), the
convention of Civitelli et al. Tables 1-2.  The model is built on the meta device
for one image of the data set's size, so nothing is allocated, initialised or
read from disk.  Each run writes ``summary.json`` (``{"rows": [...]}``, every row
with ``params`` and ``flops``) into its run directory; after a multirun one table
of all jobs is printed and written to the sweep directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nfbench.analysis.tables import format_table
from nfbench.data.sets import data_shape
from nfbench.engine.sweep import in_multirun
from nfbench.engine.validation import validate
from nfbench.models import choose_stem, split_stages
from nfbench.rundir.files import write_json

log = logging.getLogger("nfbench")

JSON_NAME = "summary.json"
# The input of Civitelli et al. Tables 1-2 (CIFAR): FLOPs scale with the image's area, so any other
# input (the default data set is 8x8 digits, 16x fewer pixels) gives numbers not comparable to them.
PAPER_INPUT = [3, 32, 32]
COUNT_COLUMNS = ("params", "params (M)", "FLOPs", "FLOPs (G)", "of which BN affine")
PAPER_COLUMN = "Civitelli et al."

# Civitelli et al. Table 1 (ResNet-50/101) and Table 2 (ResNet-18), CIFAR-10 (32x32x3, 10 classes), published
# widths: (table, params in M, GFLOPs) per model and row.  Their "BatchNorm" rows repeat ConvShort's: shown
# beside both BatchNorm networks, init=bn and init=bn init.conv_shortcut=true (docs/schemes.md).
PAPER_COUNTS = {
    "resnet18": (
        "Table 2",
        {
            "IdShort": (11.16, 1.12),
            "LearnScalar": (11.16, 1.12),
            "ConvShort": (11.52, 1.16),
            "BatchNorm": (11.52, 1.16),
        },
    ),
    "resnet50": (
        "Table 1",
        {"IdShort": (23.47, 2.6), "LearnScalar": (23.47, 2.6), "ConvShort": (38.02, 4.2), "BatchNorm": (38.02, 4.2)},
    ),
    "resnet101": (
        "Table 1",
        {
            "IdShort": (42.41, 5.02),
            "LearnScalar": (42.41, 5.02),
            "ConvShort": (74.78, 8.92),
            "BatchNorm": (74.78, 8.92),
        },
    ),
}
PAPER_ROWS = {"idshort": "IdShort", "learnscalar": "LearnScalar", "convshort": "ConvShort", "bn": "BatchNorm"}


def _flops(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[int, torch.Tensor]:
    with FlopCounterMode(display=False) as counter:
        out = fn(x)
    return counter.get_total_flops(), out


def _params(modules: Sequence[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def summarize(cfg: DictConfig) -> dict:
    """Parameters and FLOPs of ``cfg``'s model: one row, with ``parts`` (stem, stage1.., head) that sum to it."""
    plan = validate(cfg)
    shape = data_shape(cfg.data)
    with torch.device("meta"):
        net = plan.construct(shape.num_classes, shape.in_chans, shape.image_size)
        x = torch.empty(1, shape.in_chans, shape.image_size, shape.image_size)
    parts = []
    with torch.no_grad():
        flops, x = _flops(net.stem, x)
        parts.append({"name": "stem", "params": _params([net.stem]), "flops": flops})
        for i, stage in enumerate(split_stages(net.blocks), start=1):
            flops = 0
            for block in stage:
                f, x = _flops(block, x)
                flops += f
            parts.append({"name": f"stage{i}", "params": _params(stage), "flops": flops})
        flops, _ = _flops(net.head, x)
        parts.append({"name": "head", "params": _params([net.head]), "flops": flops})
    paper_setting = (shape.in_chans, shape.image_size, shape.num_classes, cfg.model.width) == (
        3,
        32,
        10,
        None,
    ) and choose_stem(cfg.model.stem, shape.image_size) == "cifar"
    # init=bn init.conv_shortcut=true is named as its option file, conf/init/bn_conv_shortcut.yaml (and the report).
    init = f"{cfg.init.name}_conv_shortcut" if cfg.init.get("conv_shortcut") else cfg.init.name
    return {
        "model": cfg.model.name,
        "init": init,
        "weights": plan.scheme.weights,
        "data": cfg.data.name,
        "input": [shape.in_chans, shape.image_size, shape.image_size],
        "num_classes": shape.num_classes,
        "params": _params([net]),
        "flops": sum(p["flops"] for p in parts),
        "parts": parts,
        "bn_params": _params([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]),
        "paper": paper_counts(cfg.model.name, cfg.init.name) if paper_setting else None,
    }


def paper_counts(model: str, init: str) -> Optional[str]:
    """Civitelli et al.'s published counts for this model and scheme at their setting, e.g. "11.52 M, 1.16 G
    (Table 2, BatchNorm)"; None where the paper has no such row."""
    table, rows = PAPER_COUNTS.get(model, (None, {}))
    counts = rows.get(PAPER_ROWS.get(init, ""))
    return None if counts is None else f"{counts[0]:.2f} M, {counts[1]} G ({table}, {PAPER_ROWS[init]})"


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _g(n: int) -> str:
    return f"{n / 1e9:.3f}"


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Parameter and FLOP columns of rows with ``params`` and ``flops``: exact (thousands separated) and in M/G."""
    return pd.DataFrame(
        {
            "params": frame["params"].map("{:,}".format),
            "params (M)": frame["params"].map(_m),
            "FLOPs": frame["flops"].map("{:,}".format),
            "FLOPs (G)": frame["flops"].map(_g),
        }
    )


def format_parts(row: dict) -> str:
    """One model: a line per stem, stage and head, then the total."""
    title = (
        f"{row['model']} / {row['init']} ({row['weights']} weights), input "
        f"{'x'.join(map(str, row['input']))}, {row['num_classes']} classes"
    )
    if row.get("bn_params"):
        title += f"; {row['bn_params']:,} of the parameters are BN affine"
    if row.get("paper"):
        title += f"; {PAPER_COLUMN}: {row['paper']}"
    parts = pd.DataFrame([*row["parts"], {"name": "total", "params": row["params"], "flops": row["flops"]}])
    table = pd.concat([parts["name"].rename("part"), _counts(parts)], axis=1)
    return title + "\n" + format_table(table, right=COUNT_COLUMNS)


def format_rows(rows: Sequence[dict]) -> str:
    """Several models: one line each, with totals."""
    frame = pd.DataFrame(rows)
    columns = [
        frame[["model", "init", "weights"]],
        frame["input"].map(lambda s: "x".join(map(str, s))).rename("input"),
        _counts(frame),
    ]
    if "bn_params" in frame and frame["bn_params"].any():  # the paper's BatchNorm rows leave these out
        columns.append(frame["bn_params"].map("{:,}".format).rename("of which BN affine"))
    if "paper" in frame and frame["paper"].notna().any():
        columns.append(frame["paper"].fillna("-").rename(PAPER_COLUMN))
    return format_table(pd.concat(columns, axis=1), right=COUNT_COLUMNS)


def summary(cfg: DictConfig) -> dict:
    """``nfbench summary``: count, write summary.json into the run directory, print the table (one run)."""
    from nfbench.engine.runtime import resolve_run_dir

    row = summarize(cfg)
    if row["input"] != PAPER_INPUT:
        log.warning(
            "FLOPs for data=%s's %s input; Civitelli et al. Tables 1-2 count a 3x32x32 input: add data=cifar10",
            row["data"],
            "x".join(map(str, row["input"])),
        )
    run_dir = resolve_run_dir(cfg)
    if in_multirun():
        write_json(run_dir / JSON_NAME, {"job": HydraConfig.get().job.num, "rows": [row]})
    else:
        write_json(run_dir / JSON_NAME, {"rows": [row]})
        print(format_parts(row))
    return row


def collect(sweep_dir: Path) -> list[dict]:
    """The rows of every job's summary.json under a sweep directory, in job order."""
    # Job directories may nest: an override like data.root=/x puts a slash into the job's subdir name.
    jobs = [json.loads(p.read_text()) for p in sweep_dir.rglob(JSON_NAME) if p != sweep_dir / JSON_NAME]
    return [row for job in sorted(jobs, key=lambda j: j["job"]) for row in job["rows"]]


class SummaryTableCallback(Callback):
    """After ``nfbench summary -m ...``: one table of all jobs, printed and written to the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        write_json(sweep_dir / JSON_NAME, {"rows": rows})
        print(format_rows(rows))
        log.info("summary of %d runs: %s", len(rows), sweep_dir / JSON_NAME)


def wants_multirun(overrides: Sequence[str]) -> bool:
    """Whether the command line sweeps (``model=resnet18,resnet50``) without asking for -m itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a in ("-m", "--multirun") for a in overrides):
        return False
    plain = [a for a in overrides if not a.startswith("-") and "=" in a]
    try:
        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(plain))
    except Exception:  # a malformed override: Hydra itself reports it, with its own message
        return False
