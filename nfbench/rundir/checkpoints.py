"""Checkpoints and weights: written with a sha256 beside them, verified when loaded,
restored into the run's objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from nfbench.errors import ConfigError, RunDirectoryError
from nfbench.rundir.files import BEST, CHECKPOINTS, LAST, WEIGHTS, atomic_write_bytes, strict_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger("nfbench")


# 3: tensors and plain values only (RNG states included), so torch.load(weights_only=True) opens it.
# 2: "epoch" counts the completed epochs (metrics.jsonl numbers epochs from 1); 1 held the last one's 0-based index.
CHECKPOINT_VERSION = 3


WEIGHTS_ONLY_VERSION = 3  # the first version torch.load(weights_only=True) opens


class CorruptCheckpointError(RunDirectoryError):
    pass


class UnverifiedFileError(RunDirectoryError):
    """A weights or checkpoint file without the checksum file written beside it: a damaged copy would load."""


_unverified: set[Path] = set()


_legacy: set[Path] = set()


def unverified(path: Path, allow: bool) -> None:
    """A file without its checksum file: refused unless ``allow`` (then a warning, once per file)."""
    if not allow:
        raise UnverifiedFileError(
            f"{path} has no checksum file {checksum_path(path).name} beside it, so a damaged copy would load "
            f"without a word. Fix: copy {checksum_path(path).name} along with it, or load it unverified with "
            f"nfbench.load_run(..., allow_unverified=True)"
        )
    if path not in _unverified:
        _unverified.add(path)
        log.warning("%s has no checksum file %s: loaded it unverified", path, checksum_path(path).name)


def _unaliased(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with each tensor that another name already holds (tied weights) left out, the rest
    contiguous: safetensors refuses shared storage.  ``safetensors.torch.load_model`` fills the left-out
    names back from their twins."""
    seen: set[tuple] = set()
    out = {}
    for name, t in tensors.items():
        alias = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and alias in seen:
            continue
        seen.add(alias)
        out[name] = t.detach().contiguous()
    return out


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metrics: dict, config: dict) -> None:
    """Write the model's weights alone as safetensors (no pickle: any framework opens it), with the
    epoch and metrics of ``metrics`` (numbers as JSON, strings as they are) and the resolved ``config``
    (JSON) as the file's metadata."""
    from safetensors.torch import save

    meta = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    }
    data = save(_unaliased(tensors), metadata={**meta, "config": json.dumps(strict_json(config), sort_keys=True)})
    write_with_checksum(path, data)


def verify_weights(path: Path, allow_unverified: bool = False) -> None:
    """Refuse a ``model.safetensors`` whose sha256 is not the one written beside it (bit-rot, a partial
    copy), in one line naming the file and the fix; one without its checksum file unless
    ``allow_unverified`` (then with a warning)."""
    try:
        _, verified = _verified_bytes(Path(path))
    except ValueError as e:
        raise CorruptCheckpointError(
            f"weights {path} cannot be read ({e}). Fix: load best.pt or last.pt instead "
            f"(nfbench.load_run(..., which='last')), or copy the file again."
        ) from e
    if not verified:
        unverified(Path(path), allow_unverified)


def save_best(ckpt_dir: Path, state: dict, metrics: dict) -> None:
    """The selected model: ``best.pt`` (to resume from) and ``model.safetensors`` (its weights, to load)."""
    save_checkpoint(ckpt_dir / BEST, state)
    selected = {"epoch": state["epoch"], "selected_on": state.get("best_on")}
    save_weights(ckpt_dir / WEIGHTS, state["model"], {**metrics, **selected}, state.get("config") or {})


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified_bytes(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, and whether a checksum file vouched for them; ValueError when its sha256 is not
    one the checksum file accepts."""
    data = Path(path).read_bytes()
    digests = _recorded_digests(path)
    if digests is not None and hashlib.sha256(data).hexdigest() not in digests:
        raise ValueError(
            f"its sha256 does not match the checksum in {checksum_path(path).name}: the file "
            f"changed after it was written"
        )
    return data, digests is not None


def _recorded_digests(path: Path) -> Optional[list[str]]:
    """The digests the checksum file accepts for ``path`` (sha256sum format), None when it has none."""
    side = checksum_path(path)
    if not side.exists():
        return None
    return [line.split()[0] for line in side.read_text().splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with its sha256 in ``PATH.sha256`` (sha256sum's format)."""
    import torch

    buf = io.BytesIO()
    torch.save({**state, "version": CHECKPOINT_VERSION}, buf)
    write_with_checksum(path, buf.getvalue())


def write_with_checksum(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and its sha256 to ``PATH.sha256`` (sha256sum's format).

    The checksum file is written before the file is renamed into place and accepts the old and the
    new digest until the rename is done; then it names the new one alone.  A kill at any moment
    leaves a file that verifies.
    """
    digest = hashlib.sha256(data).hexdigest()
    side = checksum_path(path)
    old: list[str] = []
    if path.exists():  # a file of an older nfbench has no checksum file: hash it once
        old = _recorded_digests(path) or [hashlib.sha256(path.read_bytes()).hexdigest()]
    atomic_write_bytes(side, "".join(f"{d}  {path.name}\n" for d in dict.fromkeys([digest, *old])).encode())
    atomic_write_bytes(path, data)
    atomic_write_bytes(side, f"{digest}  {path.name}\n".encode())


def _torch_load(path: Path, data: bytes) -> dict:
    """``data`` unpickled with ``weights_only=True``; a checkpoint of an nfbench before version 3 (its
    RNG state holds NumPy arrays) with ``weights_only=False`` and a warning, its RNG state converted."""
    import pickle

    import torch

    from nfbench.rng import from_legacy

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    version = state.get("version", 1) if isinstance(state, dict) else None
    if version is None or version >= WEIGHTS_ONLY_VERSION or "rng" not in state:
        raise ValueError(
            "it holds Python objects other than tensors and plain values, which no nfbench "
            "checkpoint of this version holds"
        )
    if path not in _legacy:
        _legacy.add(path)
        log.warning(
            "checkpoint %s was written by an older nfbench (checkpoint version %d): loading it with "
            "torch.load(weights_only=False); it is rewritten weights-only at the next save",
            path,
            version,
        )
    state["rng"] = from_legacy(state["rng"])
    if state.get("partial") and state["partial"].get("rng"):
        state["partial"]["rng"] = [from_legacy(r) for r in state["partial"]["rng"]]
    return state


def load_checkpoint(path: Path, fix: Optional[str] = None, allow_unverified: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``), verifying its checksum;
    a damaged or foreign file raises with advice (``fix``, else how to go on in its run directory).
    A checkpoint of an nfbench that wrote no checksum loads with a warning where ``allow_unverified``
    (resuming a run; :func:`nfbench.load_run` asks for the checksum), one that pickled NumPy arrays too."""
    try:
        data, verified = _verified_bytes(path)
        state = _torch_load(path, data)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise ValueError("not an nfbench checkpoint (no 'model'/'epoch' entries)")
    except Exception as e:
        best = path.with_name(BEST)
        if fix is None:
            fix = (
                f"resume from {best} (untouched) with trainer.resume={best}, or move {path.name} away to start "
                f"the run again"
                if best.exists() and best != path
                else f"move {path.name} away to start the run again"
            )
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). Fix: {fix}.") from e
    if not verified:  # refused or warned once it is known to be nfbench's
        unverified(path, allow_unverified)
    if state.get("version", 1) < 2:
        state["epoch"] += 1
    return state


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
    raise ConfigError(
        f"trainer.resume={resume}: no checkpoint there (looked for {p}, "
        f"{p / CHECKPOINTS / LAST}); give a .pt file or a run directory"
    )
