"""What a run directory holds and how it is written: env.json, metrics.jsonl, result.json, checkpoints.

Every file is written atomically (temporary file in the same folder, then
rename), so a run killed at any moment leaves either the old or the new file.
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"


class CorruptCheckpointError(RuntimeError):
    pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; a damaged file raises with advice."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise ValueError("not an nfbench checkpoint (no 'model'/'epoch' entries)")
        return state
    except Exception as e:
        best = path.with_name(BEST)
        hint = (f" {best} is untouched: resume from it with trainer.resume={best}, " if best.exists() and best != path
                else " ")
        raise CorruptCheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}).{hint}"
            f"or move {path.name} away to start the run again.") from e


def find_checkpoint(resume: str) -> Path:
    """trainer.resume accepts a checkpoint file or a run directory (its checkpoints/last.pt)."""
    p = Path(resume).expanduser()
    for cand in (p, p / CHECKPOINTS / LAST, p / LAST):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint there (looked for {p}, "
                            f"{p / CHECKPOINTS / LAST}); give a .pt file or a run directory")


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep the lines of epochs a resumed checkpoint already covers; drop later (lost) ones."""
    kept = [m for m in read_metrics(path) if m["epoch"] <= last_epoch]
    atomic_write_bytes(path, "".join(json.dumps(m) + "\n" for m in kept).encode())


def append_metrics(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


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
