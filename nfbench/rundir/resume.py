"""What a resume may change, and what it continues: the checkpoint chosen, the config and the
data checked against it, the history reconciled with metrics.jsonl, the origin of a branch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from nfbench.errors import ConfigError, RunDirectoryError
from nfbench.rundir.checkpoints import CorruptCheckpointError, find_checkpoint, load_checkpoint
from nfbench.rundir.files import CHECKPOINTS, LAST, flatten, read_metrics, strict_json

log = logging.getLogger("nfbench")


# Keys that cannot change the weights a run ends with: progress bars, logging, per-epoch hooks (they observe
# the run: nfbench/engine/hooks.py), checkpoint frequency,
# TensorBoard's signal-propagation logging (it leaves weights, buffers and RNG as they were), where
# the data and the run directory are, and the number of processes (data.batch_size is the global
# batch; see check_resume).  Everything else is refused, deliberately including data.num_workers (on
# the DataLoader path each worker draws its own augmentation stream, seeded base + worker id, so the
# worker count changes the batches; on the device path workers move RandAugment from the GPU to the
# CPU, whose float results need not match bit for bit), trainer.device/precision/compile/
# deterministic/channels_last (other arithmetic) and data.test_batch_size (the reported test loss).
# trainer.cuda_graph may change: a replay runs the eager step's kernels, the one difference being
# the learning rate the fused SGD kernel reads from a float32 tensor (a relative 6e-8 from the float).
# data.decode may change as written (auto to the path it resolved to, say): what it resolved to is in the
# checkpoint's data record, and check_data refuses a resume that would decode on the other path.
RESUME_SAFE = (
    "trainer.progress",
    "trainer.log_every",
    "trainer.checkpoint_every_steps",
    "trainer.log_spp_every",
    "trainer.resume",
    "trainer.run_dir",
    "trainer.devices",
    "data.root",
    "data.download",
    "spp.",
    "logger.",
    "hooks.",
    "optimized_metric",
    "trainer.cuda_graph",
    "data.decode",
)


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
        return source, load_checkpoint(
            source, fix="give trainer.resume another checkpoint or run directory, or leave it out to start afresh"
        )
    return None


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
        epochs = (
            " (a longer or shorter run is another cosine schedule for every epoch, those already run included)"
            if "trainer.epochs" in changes
            else ""
        )
        raise ConfigError(
            f"cannot resume {source} (after {state['epoch']} epoch(s)): it was trained with other values of {listed}"
            f"{epochs}; to train with the new values start a fresh run in another hydra.run.dir (or "
            f"trainer.run_dir), or rerun with the old values to continue; changes allowed on resume: "
            f"{', '.join(k.rstrip('.') + ('*' if k.endswith('.') else '') for k in RESUME_SAFE)}"
        )
    partial = state.get("partial")
    if partial and partial.get("rng") and len(partial["rng"]) != world_size:
        raise ConfigError(
            f"cannot resume {source}: it stopped mid-epoch with {len(partial['rng'])} process(es) and "
            f"this run has {world_size}; resume with {len(partial['rng'])}, or from a checkpoint "
            f"taken at an epoch's end"
        )


def branched_from(source: Path, state: dict, run_dir: Path) -> Optional[dict]:
    """Where this run's trajectory came from when it continued another run's checkpoint (kept
    across its own later resumes); None for a run that started here."""
    if state.get("resumed_from"):
        return state["resumed_from"]
    if Path(run_dir).resolve() in Path(source).resolve().parents:
        return None
    return {"checkpoint": str(Path(source).resolve()), "epoch": state["epoch"]}


def check_data(state: dict, data: dict, source: Path) -> None:
    """Refuse to continue ``source`` on other data than it trained on: ``data`` is what this run loaded
    (classes, channels, image side and the pixels' fingerprints, :func:`nfbench.data.fingerprint`), compared
    with what the checkpoint recorded (checkpoints of an nfbench before this record pass)."""
    trained = state.get("data")
    if not trained:
        return
    check_decode(trained, data, source, state["epoch"])
    differ = [k for k in sorted(set(trained) & set(data) - {"decode"}) if trained[k] != data[k]]
    if differ:
        listed = ", ".join(f"{k} {short_repr(trained[k])} -> {short_repr(data[k])}" for k in differ)
        raise ConfigError(
            f"cannot resume {source} (after {state['epoch']} epoch(s)): it trained on other data than "
            f"data.root holds now ({listed}); point data.root at the data it trained on, or start a "
            f"fresh run in another hydra.run.dir"
        )


def check_decode(trained: dict, data: dict, source: Path, epoch: int) -> None:
    """Refuse to continue a run on the other decode path (``data.decode``, as it resolved): its crops are resized
    by another filter (nfbench/data/gpu_decode.py), so the images trained on would change mid-run.  A checkpoint
    of ImageNet files from before the key was recorded decoded on the cpu path, the only one there was."""
    if "decode" not in data:
        return
    was, now = trained.get("decode", "cpu"), data["decode"]
    if was != now:
        raise ConfigError(
            f"cannot resume {source} (after {epoch} epoch(s)): it decoded its images on the {was} path "
            f"and this run would decode them on the {now} path (data.decode=auto is gpu on a CUDA device "
            f"only), which crops and resizes them otherwise; set data.decode={was} to continue it, or "
            f"start a fresh run in another hydra.run.dir"
        )


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
            f"record. Fix: move {path.name} away and rerun; nfbench writes it again from the checkpoint"
        )
    if len(rows) < len(expected):
        log.warning(
            "%s held %d of the %d epochs checkpoint %s recorded: written again from the checkpoint",
            path,
            len(rows),
            len(expected),
            source,
        )
    return list(history)
