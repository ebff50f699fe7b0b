"""What a run directory holds and how it is written: env.json, metrics.jsonl, result.json, checkpoints.

Every file is written atomically (temporary file in the same folder, then
rename), so a run killed at any moment leaves either the old or the new file;
checkpoints carry a sha256 beside them, so bit-rot is found at load, not trained on.
A full or read-only disk ends in one line naming the file (:class:`RunDirectoryError`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from nfbench.errors import RunDirectoryError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("nfbench")

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
LOG = "train.log"  # Hydra's job log of `nfbench train`
# 2: "epoch" counts the completed epochs (metrics.jsonl numbers epochs from 1); 1 held the last one's 0-based index.
CHECKPOINT_VERSION = 2


class CorruptCheckpointError(RunDirectoryError):
    pass


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
        raise RunDirectoryError(f"cannot write {path}: {os.strerror(e.errno)}; free space, fix the permissions "
                                f"or choose another run directory (hydra.run.dir=PATH)") from None


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
        out = {}
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


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digests(path: Path) -> Optional[list[str]]:
    """The digests the checksum file accepts for ``path`` (sha256sum format), None when it has none."""
    side = checksum_path(path)
    if not side.exists():
        return None
    return [line.split()[0] for line in side.read_text().splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with its sha256 in ``PATH.sha256`` (sha256sum's format).

    The checksum file is written before the checkpoint is renamed into place and accepts the old
    and the new digest until the rename is done; then it names the new one alone.  A kill at any
    moment leaves a checkpoint that verifies.
    """
    import torch

    buf = io.BytesIO()
    torch.save({**state, "version": CHECKPOINT_VERSION}, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    side = checksum_path(path)
    old: list[str] = []
    if path.exists():  # a checkpoint of an older nfbench has no checksum file: hash it once
        old = _recorded_digests(path) or [hashlib.sha256(path.read_bytes()).hexdigest()]
    atomic_write_bytes(side, "".join(f"{d}  {path.name}\n" for d in dict.fromkeys([digest, *old])).encode())
    atomic_write_bytes(path, data)
    atomic_write_bytes(side, f"{digest}  {path.name}\n".encode())


_unverified: set[Path] = set()


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying its checksum; a damaged file
    raises with advice.  A checkpoint of an nfbench that wrote no checksum loads with a warning."""
    import torch

    try:
        data = Path(path).read_bytes()
        digests = _recorded_digests(path)
        if digests is None:
            if path not in _unverified:
                _unverified.add(path)
                log.warning("checkpoint %s has no checksum file %s (written by an older nfbench): loading it "
                            "unverified", path, checksum_path(path).name)
        elif hashlib.sha256(data).hexdigest() not in digests:
            raise ValueError(f"its sha256 does not match the checksum in {checksum_path(path).name}: the file "
                             f"changed after it was written")
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise ValueError("not an nfbench checkpoint (no 'model'/'epoch' entries)")
        if state.get("version", 1) < 2:
            state["epoch"] += 1
        return state
    except Exception as e:
        best = path.with_name(BEST)
        hint = (f" {best} is untouched: resume from it with trainer.resume={best}, " if best.exists() and best != path
                else " ")
        raise CorruptCheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}).{hint}"
            f"or move {path.name} away to start the run again.") from e


def log_to_file(run_dir: Path) -> None:
    """Append the log to the run directory's train.log as Hydra's job log does (a spawned worker
    lives outside Hydra's logging)."""
    with writing(run_dir / LOG):
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)


def kept_checkpoint(ckpt_dir: Path) -> str:
    """What a stopped run leaves to resume from, in words, for its last message."""
    last = ckpt_dir / LAST
    return f"the last checkpoint is {last}" if last.exists() else f"no checkpoint exists in {ckpt_dir}"


def find_checkpoint(resume: str) -> Path:
    """trainer.resume accepts a checkpoint file or a run directory (its checkpoints/last.pt)."""
    p = Path(resume).expanduser()
    for cand in (p, p / CHECKPOINTS / LAST, p / LAST):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint there (looked for {p}, "
                            f"{p / CHECKPOINTS / LAST}); give a .pt file or a run directory")


def parse_metrics(path: Path, text: str, strict: bool = True) -> list[dict]:
    """The rows of metrics.jsonl, epochs numbered from 1.  A torn final line (a crash mid-append) is
    dropped; a damaged line before it is an error naming the file and the line, unless not ``strict``
    (a reader of other jobs' files skips it).  Files of nfbench before version 2 numbered from 0."""
    lines = text.splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if strict and n < len(lines):
                raise RunDirectoryError(f"{path}, line {n}, is not a JSON object: the file is damaged; repair or "
                                        f"delete that line (it will be missing from the run's history)") from None
    if rows and rows[0].get("epoch") == 0:
        rows = [{**r, "epoch": r["epoch"] + 1} for r in rows]
    return rows


def read_metrics(path: Path) -> list[dict]:
    """Every complete row of metrics.jsonl, see :func:`parse_metrics`."""
    if not path.exists():
        return []
    return parse_metrics(path, path.read_text())


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep the lines of epochs 1..``last_epoch``, which a resumed checkpoint covers; drop later (lost)
    ones and a torn final line."""
    if not path.exists():
        return
    kept = [m for m in read_metrics(path) if m["epoch"] <= last_epoch]
    atomic_write_bytes(path, "".join(json.dumps(m, allow_nan=False) + "\n" for m in kept).encode())


def append_metrics(path: Path, row: dict) -> None:
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(strict_json(row), allow_nan=False) + "\n")


def _git(args: list[str], cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, world_size: int) -> dict:
    """What produced a run: code version, library versions, hardware."""
    import torch

    src = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], src)
    status = _git(["status", "--porcelain", "--untracked-files=no"], src) if commit else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "versions": {p: _version(p) for p in ("nfbench", "torch", "torchvision", "timm", "hydra-core", "omegaconf")}
        | {"python": platform.python_version()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "world_size": world_size,
        "host": socket.gethostname(),
        "argv": sys.argv,
    }
