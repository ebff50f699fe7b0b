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
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nfbench.validation import validate
from nfbench.data import data_shape
from nfbench.models import split_stages
from nfbench.rundir import write_json
from nfbench.tables import format_table

log = logging.getLogger("nfbench")

JSON_NAME = "summary.json"
COUNT_COLUMNS = ("params", "params (M)", "FLOPs", "FLOPs (G)")


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
    return {"model": cfg.model.name, "init": cfg.init.name, "weights": plan.scheme.weights, "data": cfg.data.name,
            "input": [shape.in_chans, shape.image_size, shape.image_size], "num_classes": shape.num_classes,
            "params": _params([net]), "flops": sum(p["flops"] for p in parts), "parts": parts}


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _g(n: int) -> str:
    return f"{n / 1e9:.3f}"


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Parameter and FLOP columns of rows with ``params`` and ``flops``: exact (thousands separated) and in M/G."""
    return pd.DataFrame({"params": frame["params"].map("{:,}".format), "params (M)": frame["params"].map(_m),
                         "FLOPs": frame["flops"].map("{:,}".format), "FLOPs (G)": frame["flops"].map(_g)})


def format_parts(row: dict) -> str:
    """One model: a line per stem, stage and head, then the total."""
    title = (f"{row['model']} / {row['init']} ({row['weights']} weights), input "
             f"{'x'.join(map(str, row['input']))}, {row['num_classes']} classes")
    parts = pd.DataFrame([*row["parts"], {"name": "total", "params": row["params"], "flops": row["flops"]}])
    table = pd.concat([parts["name"].rename("part"), _counts(parts)], axis=1)
    return title + "\n" + format_table(table, right=COUNT_COLUMNS)


def format_rows(rows: Sequence[dict]) -> str:
    """Several models: one line each, with totals."""
    frame = pd.DataFrame(rows)
    table = pd.concat([frame[["model", "init", "weights"]], frame["input"].map(lambda s: "x".join(map(str, s)))
                       .rename("input"), _counts(frame)], axis=1)
    return format_table(table, right=COUNT_COLUMNS)


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def summary(cfg: DictConfig) -> dict:
    """``nfbench summary``: count, write summary.json into the run directory, print the table (one run)."""
    from nfbench.runtime import resolve_run_dir

    row = summarize(cfg)
    run_dir = resolve_run_dir(cfg)
    if _multirun():
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
