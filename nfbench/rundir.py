"""What a run directory holds and how it is written: env.json, metrics.jsonl, result.json, checkpoints;
who owns it (one run at a time) and what a resume may change.

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
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from nfbench.errors import ConfigError, RunDirectoryError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("nfbench")

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
WEIGHTS = "model.safetensors"  # the selected model's weights alone, beside best.pt
LOG = "train.log"  # Hydra's job log of `nfbench train`
LOCK = ".nfbench.lock"
# Every name nfbench, Hydra and wandb write at the top of a run directory: no logger may write there.
RUN_FILES = ("config.yaml", "env.json", "metrics.jsonl", "result.json", LOG, CHECKPOINTS, ".hydra", LOCK, "wandb",
             "report")
# 3: tensors and plain values only (RNG states included), so torch.load(weights_only=True) opens it.
# 2: "epoch" counts the completed epochs (metrics.jsonl numbers epochs from 1); 1 held the last one's 0-based index.
CHECKPOINT_VERSION = 3
WEIGHTS_ONLY_VERSION = 3  # the first version torch.load(weights_only=True) opens


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

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metrics.items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    data = save(_unaliased(tensors), metadata={**meta, "config": json.dumps(strict_json(config), sort_keys=True)})
    write_with_checksum(path, data)


class UnverifiedFileError(RunDirectoryError):
    """A weights or checkpoint file without the checksum file written beside it: a damaged copy would load."""


def unverified(path: Path, allow: bool) -> None:
    """A file without its checksum file: refused unless ``allow`` (then a warning, once per file)."""
    if not allow:
        raise UnverifiedFileError(
            f"{path} has no checksum file {checksum_path(path).name} beside it, so a damaged copy would load "
            f"without a word. Fix: copy {checksum_path(path).name} along with it, or load it unverified with "
            f"nfbench.load_run(..., allow_unverified=True)")
    if path not in _unverified:
        _unverified.add(path)
        log.warning("%s has no checksum file %s: loaded it unverified", path, checksum_path(path).name)


def verify_weights(path: Path, allow_unverified: bool = False) -> None:
    """Refuse a ``model.safetensors`` whose sha256 is not the one written beside it (bit-rot, a partial
    copy), in one line naming the file and the fix; one without its checksum file unless
    ``allow_unverified`` (then with a warning)."""
    try:
        _, verified = _verified_bytes(Path(path))
    except ValueError as e:
        raise CorruptCheckpointError(
            f"weights {path} cannot be read ({e}). Fix: load best.pt or last.pt instead "
            f"(nfbench.load_run(..., which='last')), or copy the file again.") from e
    if not verified:
        unverified(Path(path), allow_unverified)


def save_best(ckpt_dir: Path, state: dict, metrics: dict) -> None:
    """The selected model: ``best.pt`` (to resume from) and ``model.safetensors`` (its weights, to load)."""
    save_checkpoint(ckpt_dir / BEST, state)
    selected = {"epoch": state["epoch"], "selected_on": state.get("best_on")}
    save_weights(ckpt_dir / WEIGHTS, state["model"], {**metrics, **selected}, state.get("config") or {})


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


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified_bytes(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, and whether a checksum file vouched for them; ValueError when its sha256 is not
    one the checksum file accepts."""
    data = Path(path).read_bytes()
    digests = _recorded_digests(path)
    if digests is not None and hashlib.sha256(data).hexdigest() not in digests:
        raise ValueError(f"its sha256 does not match the checksum in {checksum_path(path).name}: the file "
                         f"changed after it was written")
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


_unverified: set[Path] = set()
_legacy: set[Path] = set()


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
        raise ValueError("it holds Python objects other than tensors and plain values, which no nfbench "
                         "checkpoint of this version holds")
    if path not in _legacy:
        _legacy.add(path)
        log.warning("checkpoint %s was written by an older nfbench (checkpoint version %d): loading it with "
                    "torch.load(weights_only=False); it is rewritten weights-only at the next save", path, version)
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
            fix = (f"resume from {best} (untouched) with trainer.resume={best}, or move {path.name} away to start "
                   f"the run again" if best.exists() and best != path else
                   f"move {path.name} away to start the run again")
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). Fix: {fix}.") from e
    if not verified:  # refused or warned once it is known to be nfbench's
        unverified(path, allow_unverified)
    if state.get("version", 1) < 2:
        state["epoch"] += 1
    return state


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
    raise ConfigError(f"trainer.resume={resume}: no checkpoint there (looked for {p}, "
                      f"{p / CHECKPOINTS / LAST}); give a .pt file or a run directory")


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
                raise RunDirectoryError(f"{path}, line {n}, is not an epoch's metrics (a JSON object with an integer "
                                        f"'epoch'): the file is damaged; repair or delete that line (it will be missing "
                                        f"from the run's history)") from None
    if rows and rows[0].get("epoch") == 0:
        rows = [{**r, "epoch": r["epoch"] + 1} for r in rows]
    return rows


def write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.jsonl as the run's history says (one JSON line per epoch), replaced whole and atomically:
    the file mirrors the checkpointed record, so a deleted or damaged file is whole again at the next
    epoch, and result.json never depends on it."""
    atomic_write_bytes(path, "".join(json.dumps(strict_json(m), allow_nan=False) + "\n" for m in history).encode())


def reconcile_history(path: Path, history: Optional[list[dict]], epoch: int, source: Path) -> list[dict]:
    """The history a resumed run continues with, checked against the run directory's metrics.jsonl.

    ``history`` is what the checkpoint ``source`` recorded for its ``epoch`` completed epochs (None for a
    checkpoint of an nfbench before it recorded one: then the file's lines up to ``epoch`` are taken as
    they are).  The file's lines up to ``epoch`` must be the start of that history: lines after it (epochs
    no checkpoint holds) and a torn final line are dropped, missing lines are written back from the
    checkpoint.  A line that differs is refused in one line: the file then describes another run than
    the checkpoint, and neither may silently win."""
    rows = [r for r in read_metrics(path) if r.get("epoch", 0) <= epoch]
    if history is None:
        return rows
    expected = [strict_json(h) for h in history]
    bad = next((i for i, (have, want) in enumerate(zip(rows, expected)) if have != want), None)
    if bad is None and len(rows) > len(expected):
        bad = len(expected)
    if bad is not None:
        raise RunDirectoryError(
            f"{path} disagrees with checkpoint {source} at epoch {rows[bad].get('epoch')} (the file holds "
            f"epochs {[r.get('epoch') for r in rows]}, the checkpoint 1-{epoch}): the file is not this run's "
            f"record. Fix: move {path.name} away and rerun; nfbench writes it again from the checkpoint")
    if len(rows) < len(expected):
        log.warning("%s held %d of the %d epochs checkpoint %s recorded: written again from the checkpoint",
                    path, len(rows), len(expected), source)
    return list(history)


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
                f"give this run another hydra.run.dir")
    write_json(path, result)


def refuse_to_start_over(run_dir: Path) -> None:
    """Refuse a fresh start in a run directory that records trained epochs but holds no checkpoint to
    continue them (deleted or moved away): training again from scratch would replace that record."""
    result = read_json(Path(run_dir) / "result.json", strict=False)
    epochs = len(read_metrics(Path(run_dir) / "metrics.jsonl", strict=False))
    finished = isinstance(result, dict) and result.get("status") == "finished"
    if finished or epochs:
        what = (f"a finished run (result.json: {result.get('epochs')} epoch(s))" if finished else
                f"{epochs} trained epoch(s) in metrics.jsonl")
        raise RunDirectoryError(
            f"run directory {run_dir} records {what} but holds no checkpoint to continue "
            f"({Path(run_dir) / CHECKPOINTS / LAST}): a fresh start would replace that record. Fix: give this run "
            f"another hydra.run.dir, or move the directory's files away to train it afresh")


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
        log.info("removed %d temporary file(s) a killed writer left: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


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


# --- Who owns a run directory --------------------------------------------------------------------

HEARTBEAT_S = 30.0
# A lock from another machine is stale once its heartbeat is this old: ten missed beats, more than
# NFS attribute caching (<= 60 s) and clock skew, and no longer than SLURM takes to declare a node dead.
STALE_AFTER_S = 300.0


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (clock ticks since boot), telling a reused pid from the holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirInUseError(ConfigError):
    """Another live run holds the run directory."""


class RunDirLock:
    """An exclusive claim on a run directory for a run's lifetime, by a lock file holding its holder.

    Why a hand-made lock file and not ``filelock``'s fcntl/flock: run directories live on the shared
    file systems of SLURM clusters, where flock is not dependable (Lustre mounted ``localflock`` or
    ``noflock`` gives node-local locks or none, silently), and a lock must name its holder for the
    refusal message.  The file is written complete under a unique name and then hard-linked to
    ``.nfbench.lock``: link(2) is atomic and fails if the name exists, on NFS too (the open(2) man
    page's recipe, checking the link count after an ambiguous reply).  It holds host, boot id, pid,
    the pid's start time and the run's start time; a thread refreshes its mtime every
    :data:`HEARTBEAT_S`.  A lock is stale, and taken over, when its holder is on this machine (same
    host and boot) and that process is gone (``kill -9``), or on another machine (or before a reboot)
    and its heartbeat is older than :data:`STALE_AFTER_S` (a failed node).  A lock held by this
    process's parent is the parent's claim for its workers (``trainer.devices=N``): the child
    neither takes nor releases it.
    """

    def __init__(self, run_dir: Path, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(run_dir) / LOCK
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.me = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
                   "pid_start": _process_start(os.getpid()),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self.owned = False
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raise :class:`RunDirInUseError` naming a live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self.owned = True
                self._beat = threading.Thread(target=self._heartbeat, name="nfbench-lock-heartbeat", daemon=True)
                self._beat.start()
                return
            holder, age = self._read()
            if holder is None:  # removed meanwhile, or being written by another process right now
                time.sleep(0.2)
                continue
            if holder.get("host") == self.me["host"] and holder.get("pid") == os.getppid():
                return  # our parent's claim: the launcher of trainer.devices=N holds it for its workers
            if not self._stale(holder, age):
                raise RunDirInUseError(self._refusal(holder, age))
            self._take_over(holder)
        raise RunDirInUseError(f"could not lock run directory {self.path.parent}: {self.path} keeps changing; "
                               "is another run starting there? Use another hydra.run.dir")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.owned and self._read()[0] == self.me:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK}.{self.me['host']}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return tmp.stat().st_nlink == 2  # NFS: the link may exist although the reply was lost
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> tuple[Optional[dict], float]:
        """The holder and its heartbeat's age in seconds; (None, 0) if there is no readable lock."""
        try:
            age = time.time() - self.path.stat().st_mtime
            return json.loads(self.path.read_text()), age
        except (OSError, ValueError):
            return None, 0.0

    def _stale(self, holder: dict, age: float) -> bool:
        same_machine = holder.get("host") == self.me["host"] and holder.get("boot_id") == self.me["boot_id"]
        if not same_machine:
            return age > self.stale_after_s
        pid = int(holder.get("pid", -1))
        return not _alive(pid) or (holder.get("pid_start") is not None and _process_start(pid) != holder["pid_start"])

    def _take_over(self, stale: dict) -> None:
        """Move the stale lock aside; if another process replaced it meanwhile, put that one back."""
        aside = self.path.with_name(f"{LOCK}.{self.me['host']}.{os.getpid()}.stale")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if json.loads(aside.read_text()) != stale:
                os.link(aside, self.path)
        except (OSError, ValueError):
            pass
        finally:
            aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _refusal(self, holder: dict, age: float) -> str:
        where = "this machine" if holder.get("host") == self.me["host"] else f"host {holder.get('host')}"
        return (f"run directory {self.path.parent} is in use by another run: pid {holder.get('pid')} on {where}, "
                f"started {holder.get('started')}, heartbeat {age:.0f} s ago (lock file {self.path}); "
                f"give this run another hydra.run.dir (or trainer.run_dir), or wait for that run to end or kill it "
                f"(a lock whose process is dead, or whose heartbeat is older than {self.stale_after_s:.0f} s, is "
                f"taken over)")


# --- What a checkpoint holds --------------------------------------------------------------------

def checkpoint_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, epoch: int,
                     partial: Optional[dict], *, best_on: str, best_top1: float, wall_s: float, config: dict,
                     resumed_from: Optional[dict], history: list[dict], best_from: int = 1,
                     data: Optional[dict] = None) -> dict:
    """A checkpoint of a run: its objects' states and where it stands.

    ``epoch`` counts the epochs completed (the number of the last one, from 1); ``partial`` is how far
    into the next one a mid-epoch checkpoint is (its running sums and every rank's RNG state), None at
    an epoch's end.  ``history`` is the run's record, one metrics row per completed epoch (what
    metrics.jsonl and result.json are written from); ``best_from`` the first epoch best.pt is selected
    from (1, unless a branch could not bring the weights of the best it inherited); ``data`` what the
    run trained on (:func:`check_data`).  ``rng`` is this process's RNG state, for the record: an epoch
    reseeds from (seed, epoch, rank).  :func:`restore_checkpoint` reads it back.
    """
    from nfbench.rng import rng_state

    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "best_on": best_on, "best_top1": best_top1,
            "wall_s": wall_s, "rng": rng_state(), "partial": partial, "config": config, "resumed_from": resumed_from,
            "history": history, "best_from": best_from, "data": data}


@dataclass(frozen=True)
class Restored:
    """Where a restored checkpoint left its run (see :func:`checkpoint_state`)."""

    epoch: int  # the epochs completed
    best_top1: float  # the best selected top-1 so far (on best_on's split)
    wall_s: float  # the wall time spent before
    partial: Optional[dict]  # how far into the next epoch, or None
    history: Optional[list[dict]] = None  # one row per completed epoch; None: written before nfbench kept it
    best_from: int = 1  # the first epoch best.pt is selected from


def restore_checkpoint(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                       source: Optional[Path] = None) -> Restored:
    """Load a checkpoint written from :func:`checkpoint_state` into the run's objects (in place), before DDP
    and ``torch.compile`` wrap the model; return where the run stood.  A checkpoint of another network
    (other classes, channels or layers) is a ConfigError naming ``source``."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = " ".join(str(e).split())[:300]
        raise ConfigError(f"cannot resume {source or 'the checkpoint'}: it holds another network than this run "
                          f"builds ({first}); resume with the model, scheme and data it was trained with, or "
                          f"start a fresh run in another hydra.run.dir") from None
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    # Checkpoints written before data.val_size hold the (test-selected) best under another name.
    best_top1 = state["best_top1"] if "best_top1" in state else state["best_test_top1"]
    return Restored(state["epoch"], best_top1, state["wall_s"], state.get("partial") or None,
                    state.get("history"), state.get("best_from") or 1)


def check_data(state: dict, data: dict, source: Path) -> None:
    """Refuse to continue ``source`` on other data than it trained on: ``data`` is what this run loaded
    (classes, channels, image side and the pixels' fingerprints, :func:`nfbench.fingerprint`), compared
    with what the checkpoint recorded (checkpoints of an nfbench before this record pass)."""
    trained = state.get("data")
    if not trained:
        return
    differ = [k for k in sorted(set(trained) & set(data)) if trained[k] != data[k]]
    if differ:
        listed = ", ".join(f"{k} {_short(trained[k])} -> {_short(data[k])}" for k in differ)
        raise ConfigError(f"cannot resume {source} (after {state['epoch']} epoch(s)): it trained on other data than "
                          f"data.root holds now ({listed}); point data.root at the data it trained on, or start a "
                          f"fresh run in another hydra.run.dir")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- What a resume may change ---------------------------------------------------------------------

# Keys that cannot change the weights a run ends with: progress bars, logging, checkpoint frequency,
# TensorBoard's signal-propagation logging (it leaves weights, buffers and RNG as they were), where
# the data and the run directory are, and the number of processes (data.batch_size is the global
# batch; see check_resume).  Everything else is refused, deliberately including data.num_workers (on
# the DataLoader path each worker draws its own augmentation stream, seeded base + worker id, so the
# worker count changes the batches; on the device path workers move RandAugment from the GPU to the
# CPU, whose float results need not match bit for bit), trainer.device/precision/compile/
# deterministic/channels_last (other arithmetic) and data.test_batch_size (the reported test loss).
# trainer.cuda_graph may change: a replay runs the eager step's kernels, the one difference being
# the learning rate the fused SGD kernel reads from a float32 tensor (a relative 6e-8 from the float).
RESUME_SAFE = ("trainer.progress", "trainer.log_every", "trainer.checkpoint_every_steps", "trainer.log_spp_every",
               "trainer.resume", "trainer.run_dir", "trainer.devices", "data.root", "data.download", "spp.",
               "logger.", "optimized_metric", "trainer.cuda_graph")


def load_resume_state(run_dir: Path, resume: Optional[str]) -> Optional[tuple[Path, dict]]:
    """The checkpoint a run continues from, and its state: the run directory's own last.pt, else
    ``trainer.resume``.

    The run's own last.pt wins over an explicit ``trainer.resume``: a requeue reruns the same
    command, and going back to the checkpoint named there (say best.pt, as the damaged-checkpoint
    hint suggests) would throw away everything trained since.  ``trainer.resume`` applies when the
    run directory has no last.pt yet (a branch into a new directory) or its last.pt is unreadable.
    """
    own = Path(run_dir) / CHECKPOINTS / LAST
    if own.exists():
        try:
            return own, load_checkpoint(own)
        except CorruptCheckpointError as e:
            if not resume:
                raise
            log.warning("%s; resuming from trainer.resume=%s instead", e, resume)
    if resume:
        source = find_checkpoint(resume)
        return source, load_checkpoint(source, fix="give trainer.resume another checkpoint or run directory, or "
                                                   "leave it out to start afresh")
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: ``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Keys whose resolved values differ, ``{key: (old, new)}``, outside :data:`RESUME_SAFE`.

    A key the checkpoint's config lacks (added to nfbench since) counts as changed only if the new
    value differs from the default of the schema ``new``'s options have, the behaviour the old run had.
    """
    from omegaconf import OmegaConf

    from nfbench.config import schema

    before, after = flatten(old), flatten(new)
    defaults = flatten(OmegaConf.to_container(schema(new), enum_to_str=True))
    missing = object()
    changes = {}
    for key, value in after.items():
        was = before.get(key, defaults.get(key, missing))
        if was != value and not key.startswith(RESUME_SAFE):
            changes[key] = ("(absent)" if was is missing else was, value)
    return changes


def check_resume(state: dict, config: dict, source: Path, world_size: int) -> None:
    """Refuse to continue ``source`` under a configuration that would change its trajectory.

    The checkpoint holds the resolved config it was trained with (``state["config"]``); any
    difference outside :data:`RESUME_SAFE` is refused in one line listing ``key old -> new``.
    That includes ``trainer.epochs``: a longer cosine schedule is another schedule for every epoch,
    those already run included.  Branching (``trainer.resume=OTHER_RUN`` into a new directory)
    follows the same rule, because the optimiser and scheduler state it restores carry the old
    learning rate, momentum and schedule length: a branch with changed keys would run the old values
    under the new labels.  A branch continues the same trajectory elsewhere, and records where it came
    from (``resumed_from``).  A different number of processes is allowed at an epoch's end (the same
    data order and global batch; the per-rank augmentation draws differ), not mid-epoch, where the
    checkpoint holds one RNG state per process of the old run.
    """
    changes = config_changes(state.get("config") or {}, config)
    if changes:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))
        epochs = (" (a longer or shorter run is another cosine schedule for every epoch, those already run "
                  "included)" if "trainer.epochs" in changes else "")
        raise ConfigError(
            f"cannot resume {source} (after {state['epoch']} epoch(s)): it was trained with other values of {listed}"
            f"{epochs}; to train with the new values start a fresh run in another hydra.run.dir (or "
            f"trainer.run_dir), or rerun with the old values to continue; changes allowed on resume: "
            f"{', '.join(k.rstrip('.') + ('*' if k.endswith('.') else '') for k in RESUME_SAFE)}")
    partial = state.get("partial")
    if partial and partial.get("rng") and len(partial["rng"]) != world_size:
        raise ConfigError(f"cannot resume {source}: it stopped mid-epoch with {len(partial['rng'])} process(es) and "
                          f"this run has {world_size}; resume with {len(partial['rng'])}, or from a checkpoint "
                          f"taken at an epoch's end")


def branched_from(source: Path, state: dict, run_dir: Path) -> Optional[dict]:
    """Where this run's trajectory came from when it continued another run's checkpoint (kept
    across its own later resumes); None for a run that started here."""
    if state.get("resumed_from"):
        return state["resumed_from"]
    if Path(run_dir).resolve() in Path(source).resolve().parents:
        return None
    return {"checkpoint": str(Path(source).resolve()), "epoch": state["epoch"]}
