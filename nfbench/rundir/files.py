"""The run directory's files: atomic writes, strict JSON, config.yaml, metrics.jsonl and result.json."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterator, Optional

from nfbench.errors import RunDirectoryError

log = logging.getLogger("nfbench")


CHECKPOINTS = "checkpoints"


LAST, BEST = "last.pt", "best.pt"


WEIGHTS = "model.safetensors"  # the selected model's weights alone, beside best.pt


LOG = "train.log"  # Hydra's job log of `nfbench train`


LOCK = ".nfbench.lock"


# Every name nfbench, Hydra and wandb write at the top of a run directory: no logger may write there.
RUN_FILES = (
    "config.yaml",
    "env.json",
    "metrics.jsonl",
    "result.json",
    LOG,
    CHECKPOINTS,
    ".hydra",
    LOCK,
    "wandb",
    "report",
)


# errno values that mean "this run directory cannot take more bytes": the user must act.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full, read-only or forbidden run directory into one line naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise RunDirectoryError(
            f"cannot write {path}: {os.strerror(e.errno)}; free space, fix the permissions "
            f"or choose another run directory (hydra.run.dir=PATH)"
        ) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename.  The temporary file is
    created with mode 0666 less the umask, like every other file of the run directory."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by null plus a ``KEY_str`` field ("nan", "inf",
    "-inf") beside it: JSON readers other than Python's reject NaN and Infinity."""
    if isinstance(obj, dict):
        out: dict = {}
        for k, v in obj.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k], out[f"{k}_str"] = None, str(v)
            else:
                out[k] = strict_json(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [None if isinstance(v, float) and not math.isfinite(v) else strict_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def read_json(path: Path, strict: bool = True) -> Any:
    """A JSON file of the run directory.  Not ``strict`` (a reader of other jobs' files): None when it is
    absent or unreadable (a job on another node still writing it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        if strict:
            raise
        return None


def read_config(run_dir: Path) -> Optional[dict]:
    """The run's config as a plain dict: its resolved config.yaml or, for a job killed before writing it,
    Hydra's .hydra/config.yaml (whose ``${hydra:...}`` values stay unresolved outside Hydra); None when
    it has neither."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    def keep_hydra(x):  # ${hydra:...} escaped: a literal here, whatever Hydra state this process holds
        if isinstance(x, dict):
            return {k: keep_hydra(v) for k, v in x.items()}
        if isinstance(x, list):
            return [keep_hydra(v) for v in x]
        return x.replace("${hydra:", "\\${hydra:") if isinstance(x, str) else x

    for path in (Path(run_dir) / "config.yaml", Path(run_dir) / ".hydra" / "config.yaml"):
        if path.is_file():
            raw = keep_hydra(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
            try:
                return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)  # type: ignore[return-value]
            except InterpolationResolutionError:
                return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]
    return None


def read_metrics(path: Path, strict: bool = True) -> list[dict]:
    """The rows of metrics.jsonl, epochs numbered from 1; [] when there is none.  A torn final line (a
    crash mid-append) is dropped; a damaged line before it is an error naming the file and the line,
    unless not ``strict`` (a reader of other jobs' files skips it).  Files of nfbench before version 2
    numbered from 0."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError
            rows.append(row)
        except ValueError:
            if strict and n < len(lines):
                raise RunDirectoryError(
                    f"{path}, line {n}, is not an epoch's metrics (a JSON object with an integer "
                    f"'epoch'): the file is damaged; repair or delete that line (it will be missing "
                    f"from the run's history)"
                ) from None
    if rows and rows[0].get("epoch") == 0:
        rows = [{**r, "epoch": r["epoch"] + 1} for r in rows]
    return rows


def write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.jsonl as the run's history says (one JSON line per epoch), replaced whole and atomically:
    the file mirrors the checkpointed record, so a deleted or damaged file is whole again at the next
    epoch, and result.json never depends on it."""
    atomic_write_bytes(path, "".join(json.dumps(strict_json(m), allow_nan=False) + "\n" for m in history).encode())


def write_result(path: Path, result: dict) -> None:
    """result.json, never replacing a finished result with one of fewer epochs or without its test top-1
    (a rerun that lost its history must not overwrite the record of what was trained)."""
    old = read_json(path, strict=False) if path.exists() else None
    if isinstance(old, dict) and old.get("status") == "finished":
        fewer = (result.get("epochs") or 0) < (old.get("epochs") or 0)
        if fewer or (old.get("test_top1") is not None and result.get("test_top1") is None):
            raise RunDirectoryError(
                f"{path} records a finished run of {old.get('epochs')} epoch(s) (test top-1 {old.get('test_top1')}); "
                f"this run would replace it with {result.get('epochs')} epoch(s) (test top-1 "
                f"{result.get('test_top1')}). Fix: move the run directory's files away to train it afresh, or "
                f"give this run another hydra.run.dir"
            )
    write_json(path, result)


# Temporary files of atomic_write_bytes: ``.NAME.<12 hex>.tmp``, left behind only by a killed writer.
_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files a writer killed mid-write (``kill -9`` during a checkpoint save) left in
    the run directory and its checkpoints; only the holder of the run directory's lock may call this."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS):
        if folder.is_dir():
            for p in folder.iterdir():
                if _TMP.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    if removed:
        log.info(
            "removed %d temporary file(s) a killed writer left: %s", len(removed), ", ".join(p.name for p in removed)
        )
    return removed


def job_log_handler(run_dir: Path) -> logging.FileHandler:
    """A handler appending to the run directory's train.log in the format of Hydra's job log."""
    with writing(run_dir / LOG):
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    return handler


def log_to_file(run_dir: Path) -> None:
    """Append the log to the run directory's train.log as Hydra's job log does (a spawned worker
    lives outside Hydra's logging)."""
    logging.getLogger().addHandler(job_log_handler(run_dir))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: ``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}


def refuse_to_start_over(run_dir: Path) -> None:
    """Refuse a fresh start in a run directory that records trained epochs but holds no checkpoint to
    continue them (deleted or moved away): training again from scratch would replace that record."""
    result = read_json(Path(run_dir) / "result.json", strict=False)
    epochs = len(read_metrics(Path(run_dir) / "metrics.jsonl", strict=False))
    finished = isinstance(result, dict) and result.get("status") == "finished"
    if finished or epochs:
        what = (
            f"a finished run (result.json: {result.get('epochs')} epoch(s))"
            if finished
            else f"{epochs} trained epoch(s) in metrics.jsonl"
        )
        raise RunDirectoryError(
            f"run directory {run_dir} records {what} but holds no checkpoint to continue "
            f"({Path(run_dir) / CHECKPOINTS / LAST}): a fresh start would replace that record. Fix: give this run "
            f"another hydra.run.dir, or move the directory's files away to train it afresh"
        )
