"""Where a run's metrics go besides metrics.jsonl: the ``logger`` config group (conf/logger/) and its registry.

The training loop talks to one :class:`Loggers` object and never to a backend: TensorBoard
(``tb/``), a per-epoch CSV table for spreadsheets, Weights & Biases (``nfbench[wandb]``), any
number of them at once (``logger=[tensorboard,csv]``) or none (``logger=none``).  Only rank 0
builds backends; the other ranks hold an empty :class:`Loggers`, so the loop calls it everywhere.

Three kinds of record: one row per epoch (:meth:`Loggers.log_metrics`, what metrics.jsonl holds),
curves against the optimiser step (:meth:`Loggers.log_scalars`: the training loss at log steps,
signal propagation), and at the end the hyperparameters with the final metrics
(:meth:`Loggers.log_hparams`), which TensorBoard's HParams view and wandb's run table show a
sweep by.

Each backend is a class registered with :func:`register_logger` under the name ``logger=NAME`` selects, with
the dataclass of its keys (``config``, Hydra's schema of ``logger.NAME.*``: nfbench.configstore) and which of
them are paths inside the run directory (``paths``, checked once for all backends: :func:`check`).  A new
backend is that class and its conf/logger/NAME.yaml (docs/extending.md).  This module imports no torch.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Protocol, Sequence

from omegaconf import DictConfig

from nfbench import rundir
from nfbench.config import Choice, plain, require
from nfbench.errors import ConfigError
from nfbench.registry import Registry


class Logger(Protocol):
    """A backend: built from its ``logger.NAME`` node, the run directory, the run's config and the history of
    the epochs it resumes after (which a backend new to the run logs first)."""

    config: ClassVar[type]  # the dataclass of its keys
    paths: ClassVar[tuple[str, ...]]  # its keys that name a file or folder inside the run directory

    def __init__(self, node: DictConfig, run_dir: Path, cfg: DictConfig, history: Sequence[dict]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], epoch: int) -> None: ...

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def tag(key: str) -> str:
    """A metrics.jsonl key as a chart name: ``train_loss`` -> ``train/loss``, so each split gets a section."""
    return key.replace("_", "/", 1) if key.startswith(("train_", "val_", "test_")) else key


def run_config(cfg: DictConfig) -> dict:
    """The resolved config without the logger group: what a logger records as the run's hyperparameters."""
    tree = plain(cfg)
    tree.pop("logger", None)
    return tree


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """:func:`run_config` as flat ``group.key`` scalars, lists as text (TensorBoard's HParams columns)."""
    return {k: str(v) if isinstance(v, list) else v for k, v in rundir.flatten(run_config(cfg)).items()}


LOGGERS: Registry[type[Logger]] = Registry("logger")


def register_logger(name: str) -> Callable[[type], type]:
    """Register the decorated backend class as ``logger=name`` (see :class:`Logger`)."""
    return LOGGERS.register(name)


@dataclass
class TensorBoardLoggerConfig:
    """logger=tensorboard: TensorBoard event files, hyperparameters included."""

    # Folder of the event files, inside the run directory.
    dir: str = "tb"


@register_logger("tensorboard")
class TensorBoardLogger:
    """Event files in ``run_dir/<dir>``; the hyperparameters go to the HParams view at the end.  A folder
    without event files (the logger added on resume) gets the epochs of ``history`` first."""

    config = TensorBoardLoggerConfig
    paths = ("dir",)

    def __init__(self, node: DictConfig, run_dir: Path, cfg: DictConfig, history: Sequence[dict] = ()) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = run_dir / node.dir
        new = not any(log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(log_dir))
        if new:
            for row in history:
                self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def log_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(tag(k), v, epoch)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        # hparam/<metric>: names of their own, so the final values do not add a point to the epoch curves.
        # run_name=".": in this run's directory, not a new subdirectory per call (torch's default).
        # Keys whose value is null get no column (torch skips them).
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in final.items()}, run_name=".")

    def close(self) -> None:
        self.writer.close()


@dataclass
class CsvLoggerConfig:
    """logger=csv: a CSV table of the per-epoch metrics."""

    # The per-epoch table (metrics.jsonl's columns), inside the run directory.
    file: str = "metrics.csv"


@register_logger("csv")
class CsvLogger:
    """One row per epoch, the columns of metrics.jsonl, in ``run_dir/<file>``.

    The table is rewritten whole (atomically) each epoch, a few kilobytes, from the run's history (the
    checkpointed record, as metrics.jsonl is): on resume it holds exactly the epochs the checkpoint
    holds, and a logger added on resume starts with all of them.
    """

    config = CsvLoggerConfig
    paths = ("file",)

    def __init__(self, node: DictConfig, run_dir: Path, cfg: DictConfig, history: Sequence[dict] = ()) -> None:
        self.path = run_dir / node.file
        self.rows: list[dict] = [dict(row) for row in history]
        if self.rows:
            self._write()

    def log_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        self.rows.append({"epoch": epoch, **metrics})
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        rundir.atomic_write_bytes(self.path, text.getvalue().encode())

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Per-step curves are not the per-epoch table's."""

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """The config is in config.yaml beside the table, the final metrics in result.json."""

    def close(self) -> None:
        pass


class WandbMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbLoggerConfig:
    """logger=wandb: Weights & Biases (pip install 'nfbench[wandb]')."""

    project: str = "nfbench"  # wandb project
    entity: Optional[str] = None  # wandb entity (user or team; null: your default)
    group: Optional[str] = None  # wandb group, e.g. one sweep
    # Null: the run directory's name.
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)  # wandb tags
    # online, offline or disabled; null: wandb's own choice (the WANDB_MODE variable, else online).
    mode: Optional[WandbMode] = None


@register_logger("wandb")
class WandbLogger:
    """A Weights & Biases run, files under ``run_dir/wandb``; WANDB_MODE=offline works without a network.

    The run's id is derived from the run directory, so a requeued or resumed job continues the same
    wandb run.  Epoch rows are plotted against ``epoch``, per-step curves against ``global_step``.
    """

    config = WandbLoggerConfig
    paths = ()

    @staticmethod
    def check(node: DictConfig) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "logger=wandb needs the wandb package: pip install 'nfbench[wandb]' (or choose "
                "logger=tensorboard, csv or none)"
            )

    def __init__(self, node: DictConfig, run_dir: Path, cfg: DictConfig, history: Sequence[dict] = ()) -> None:
        import wandb

        resolved = str(run_dir.resolve())
        self.run = wandb.init(
            project=node.project,
            entity=node.entity,
            group=node.group,
            tags=list(node.tags),
            name=node.name or run_dir.name,
            mode=node.mode,
            dir=str(run_dir),
            id=hashlib.sha256(resolved.encode()).hexdigest()[:16],
            resume="allow",
            config=run_config(cfg),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("global_step")
        self.axes: dict[str, str] = {}
        if not self.run.resumed:  # a new wandb run of a resumed nfbench run: the epochs trained before
            for row in history:
                self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def _define(self, keys: list[str], axis: str) -> None:
        for k in keys:
            if k not in self.axes:
                self.axes[k] = axis
                self.run.define_metric(k, step_metric=axis)

    def log_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        row = {tag(k): v for k, v in metrics.items()}
        self._define(list(row), "epoch")
        self.run.log({**row, "epoch": epoch})

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._define(list(scalars), "global_step")
        self.run.log({**scalars, "global_step": step})

    def log_hparams(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        self.run.summary.update(final)  # the config went in at wandb.init

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Every selected backend behind one interface; empty on ranks other than 0 and with ``logger=none``."""

    def __init__(self, backends: Optional[list[Logger]] = None) -> None:
        self.backends = backends or []

    @classmethod
    def from_config(cls, cfg: DictConfig, run_dir: Path, history: Sequence[dict] = ()) -> "Loggers":
        """The backends ``cfg.logger`` selects, writing into ``run_dir``; ``history``: the rows of the epochs
        the run resumes after (none for a fresh run), which a backend new to the run logs first."""
        return cls([LOGGERS.get(name)(node, run_dir, cfg, history) for name, node in cfg.logger.items()])

    def __bool__(self) -> bool:
        """Whether anything is logged: the loop reads the device for a logger only when there is one."""
        return bool(self.backends)

    def log_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        """One epoch's row (metrics.jsonl's keys; an ``epoch`` key is taken from ``epoch``)."""
        row = {k: v for k, v in metrics.items() if k != "epoch"}
        for b in self.backends:
            b.log_metrics(row, epoch)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Curves against the global optimiser step (0-based), e.g. ``train/loss_step``, ``spp_*``."""
        for b in self.backends:
            b.log_scalars(scalars, step)

    def log_hparams(self, cfg: DictConfig, final: dict[str, Any]) -> None:
        """The flattened config with the final metrics (the finite numbers among ``final``)."""
        numbers = {
            k: v
            for k, v in final.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        hparams = hparams_of(cfg)
        for b in self.backends:
            b.log_hparams(hparams, numbers)

    def close(self) -> None:
        for b in self.backends:
            b.close()


def check(logger: DictConfig) -> None:
    """The selected loggers, once, before any data loads: each a registered backend (and its own check, where
    it has one), and the files and folders they write paths inside the run directory that none of the run's
    own files has (:data:`nfbench.rundir.RUN_FILES`) and that no other logger uses: a CSV table named
    metrics.jsonl would overwrite the run's record."""
    paths: dict[str, str] = {}
    for name, node in logger.items():
        backend = LOGGERS.get(str(name))
        if hasattr(backend, "check"):
            backend.check(node)
        paths.update({f"logger.{name!s}.{key}": node[key] for key in backend.paths if node[key] is not None})
    for key, value in paths.items():
        path = Path(value)
        require(
            bool(value) and not path.is_absolute() and ".." not in path.parts,
            key,
            value,
            "must be a path inside the run directory (relative, without '..')",
        )
        require(
            path.parts[0] not in rundir.RUN_FILES,
            key,
            value,
            f"the run directory's own files and folders are reserved ({', '.join(rundir.RUN_FILES)}); choose "
            "another name",
        )
    if len(set(paths.values())) < len(paths):
        raise ConfigError(f"{' and '.join(paths)} name the same path {next(iter(paths.values()))!r}: choose two names")
