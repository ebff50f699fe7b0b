"""A refused command (a mistake the user can fix): one line on the terminal, and no run directory
made for nothing.

Hydra creates the run directory, writes its ``.hydra/`` files and opens its job log (``train.log``)
before nfbench sees the config, so a run refused at once would leave an empty-looking run directory
behind, and a refused rerun of an existing run would leave ``.hydra/`` describing the refused
command.  :class:`RunDirWatch` (a Hydra callback, conf/config.yaml) notes at the start of a single
run whether its directory exists; :func:`refuse` then removes a directory this command created
while it holds nothing but Hydra's files (and the now empty folders above it that this command
also created), or puts back the ``.hydra/`` files of a directory that was there before.  Nothing
else that was there before the command is touched.  A multirun records a refused point in its job
directory instead (nfbench.cli.main).

The message goes to stderr as ``nfbench: error: ...``, once: the job log records it too, but Hydra's
console handler leaves it out (:class:`NotOnConsole`).
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("nfbench")

HYDRA_DIR = ".hydra"
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}
PRINTED = "nfbench_printed"  # a log record's attribute: refuse() prints this message itself


@dataclass
class RunDirBefore:
    """A single run's directory as it was when the command started."""

    path: Optional[Path] = None
    created: Optional[Path] = None  # the topmost folder this command creates; None: the directory existed
    hydra_files: dict[str, bytes] = field(default_factory=dict)  # .hydra/ of a directory that existed


BEFORE = RunDirBefore()


class RunDirWatch(Callback):
    """Records :data:`BEFORE` before Hydra creates the run directory (on_run_start comes first)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        missing = [p for p in (path, *path.parents) if not p.exists()]
        hydra_dir = path / HYDRA_DIR
        kept = {} if missing else {p.name: p.read_bytes() for p in hydra_dir.glob("*") if p.is_file()}
        BEFORE.path, BEFORE.created, BEFORE.hydra_files = path, missing[-1] if missing else None, kept


class NotOnConsole(logging.Filter):
    """Hydra's console handler: skip the records :func:`refuse` prints to stderr itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PRINTED, False)


def _holds_only_hydra_files(run_dir: Path, job_log: str) -> bool:
    for p in run_dir.iterdir():
        if p.name == HYDRA_DIR and p.is_dir():
            if any(q.name not in HYDRA_FILES for q in p.iterdir()):
                return False
        elif p.name != job_log or not p.is_file():
            return False
    return True


def _clean_up(run_dir: Path, job_log: str) -> None:
    """Undo what Hydra did to ``run_dir`` for a run that was refused (see the module's docstring);
    ``job_log``: Hydra's log file, named after the job (train.log, spp.log, summary.log)."""
    if BEFORE.path is None or BEFORE.path != run_dir.absolute() or not run_dir.is_dir():
        return
    if BEFORE.created is None:
        hydra_dir = run_dir / HYDRA_DIR
        for p in hydra_dir.glob("*"):
            if p.name in BEFORE.hydra_files:
                p.write_bytes(BEFORE.hydra_files[p.name])
            elif p.name in HYDRA_FILES:
                p.unlink()
        if not BEFORE.hydra_files and hydra_dir.is_dir() and not any(hydra_dir.iterdir()):
            hydra_dir.rmdir()
        return
    if not _holds_only_hydra_files(run_dir, job_log):
        return
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == BEFORE.created.parent or any(parent.iterdir()):
            break
        parent.rmdir()


def refuse(error: Exception | str, code: int = 2) -> NoReturn:
    """End the command on ``error``: ``nfbench: error: MESSAGE`` on stderr (recorded in the job log,
    not repeated on the console), the run directory as :func:`_clean_up` leaves it, exit ``code`` (2: a
    mistake the user can fix; 130 for an interruption by SIGINT, as a run stopped in training exits)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    log.error("%s", error, extra={PRINTED: True})
    if HydraConfig.initialized():
        # A Hydra config without a job (one composed, or left by an earlier in-process run) has no
        # output directory: then there is nothing to clean up, and the refusal still ends in one line.
        hydra = HydraConfig.get()
        output_dir = OmegaConf.select(
            cast(DictConfig, hydra), "runtime.output_dir", default=None, throw_on_missing=False
        )
        if output_dir:
            _clean_up(Path(output_dir), f"{hydra.job.name}.log")
    print(f"nfbench: error: {error}", file=sys.stderr)
    sys.exit(code)
