"""Checkpoints that torch and timm open safely, the weights-only model.safetensors, and nfbench.load_run:
a run loads back, for every scheme, to a network whose outputs are the trained one's."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm.models
import torch
from safetensors import safe_open

import nfbench
from nfbench import rng, rundir
from nfbench.engine.loop import train
from nfbench.models import ModelPlan
from nfbench.schemes import SCHEMES
from tests.conftest import TINY

ONE_EPOCH = [*TINY, "data.train_subset=64", "data.test_subset=32", "trainer.epochs=1"]


def train_and_keep_net(make_cfg, overrides: list[str], run_dir: Path, monkeypatch) -> torch.nn.Module:
    """Train, and return the very network object the run trained (in its final state)."""
    built = []
    build = ModelPlan.build

    def keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    with monkeypatch.context() as m:
        m.setattr(ModelPlan, "build", keep)
        assert train(make_cfg(overrides, run_dir))["status"] == "finished"
    return built[0]


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


CASES = [("resnet20", s) for s in SCHEMES.names()] + [("nf_resnet26", "nf"), ("he_resnet20", "bn")]


@pytest.mark.parametrize("model,init", CASES)
def test_load_run_gives_the_trained_network_and_files_open_safely(make_cfg, tmp_path, monkeypatch, model, init):
    """One epoch, then load_run: the outputs are the trained network's, bit for bit; torch's and timm's
    safe loaders open best.pt, last.pt and model.safetensors."""
    overrides = [*ONE_EPOCH, f"model={model}", f"init={init}", "model.width=8" if model.startswith("nf_") else ""]
    trained = train_and_keep_net(make_cfg, [o for o in overrides if o], tmp_path, monkeypatch)
    for which in ("best", "last"):
        net, cfg = nfbench.load_run(tmp_path, which=which)
        assert not net.training and cfg.init.name == init and cfg.model.name == model
        assert next(net.parameters()).device == torch.device("cpu")
        same_outputs(trained, net, (1, 8, 8))
    ckpt = tmp_path / "checkpoints"
    expected = trained.state_dict()
    for name in ("best.pt", "last.pt"):
        state = torch.load(ckpt / name)  # torch's default: weights_only=True
        assert state["epoch"] == 1 and state["version"] == rundir.CHECKPOINT_VERSION
        loaded = timm.models.load_state_dict(str(ckpt / name), weights_only=True)
        assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    weights = timm.models.load_state_dict(str(ckpt / "model.safetensors"))
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_model_safetensors_metadata_and_checkpoint_weights_only(make_cfg, tmp_path, monkeypatch):
    """Every checkpoint a run writes, mid-epoch ones (with per-rank RNG lists) included, opens with
    weights_only=True; model.safetensors records the epoch, the accuracy and the config."""
    seen: list[dict] = []
    save = rundir.save_checkpoint

    def save_and_reopen(path: Path, state: dict) -> None:
        save(path, state)
        seen.append(torch.load(path, weights_only=True))

    overrides = [
        *TINY,
        "trainer.epochs=2",
        "trainer.checkpoint_every_steps=3",
        "trainer.precision=fp16",
        "sched.warmup_epochs=1",
        "sched.per_step=true",
        "trainer.mixup_alpha=0.2",
    ]
    monkeypatch.setattr(rundir, "save_checkpoint", save_and_reopen)
    train(make_cfg(overrides, tmp_path))
    assert any(s["partial"] and s["partial"]["rng"] for s in seen) and any(s["partial"] is None for s in seen)
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    best = torch.load(tmp_path / "checkpoints" / "best.pt")
    with safe_open(str(tmp_path / "checkpoints" / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert int(meta["epoch"]) == best["epoch"]
    assert float(meta["test_top1"]) == rows[best["epoch"] - 1]["test_top1"]
    assert json.loads(meta["config"]) == best["config"] and meta["selected_on"] == "test_top1"


def test_model_safetensors_records_the_validation_top1_it_was_selected_on(make_cfg, tmp_path):
    train(make_cfg([*TINY, "data.val_size=64"], tmp_path))
    best = torch.load(tmp_path / "checkpoints" / "best.pt")
    row = rundir.read_metrics(tmp_path / "metrics.jsonl")[best["epoch"] - 1]
    with safe_open(str(tmp_path / "checkpoints" / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["selected_on"] == "val_top1" and int(meta["epoch"]) == best["epoch"]
    assert (float(meta["val_top1"]), float(meta["test_top1"])) == (row["val_top1"], row["test_top1"])


def test_rng_state_round_trips_exactly():
    """Through plain pickle too: ranks exchange their states with all_gather_object, which pickles."""
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    state = pickle.loads(pickle.dumps(rng.rng_state()))
    draws = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    rng.set_rng_state(state)
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == draws


def legacy_checkpoint(path: Path, version: int = 2) -> dict:
    """A checkpoint as nfbench wrote it before version 3: NumPy's and Python's RNG state as pickled tuples."""
    np.random.seed(5), random.seed(5)
    state = {
        "model": {"w": torch.ones(2)},
        "epoch": 1,
        "version": version,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": None,
        },
        "partial": None,
    }
    state["partial"] = {"batches_done": 3, "rng": [state["rng"], state["rng"]]}  # two ranks stopped mid-epoch
    torch.save(state, path)
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    return state


def test_checkpoint_of_an_older_nfbench_loads_with_one_warning(tmp_path, caplog):
    path = tmp_path / "last.pt"
    old = legacy_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the reason for version 3
    with caplog.at_level(logging.WARNING, logger="nfbench"):
        state = rundir.load_checkpoint(path)
        rundir.load_checkpoint(path)
    assert sum("older nfbench" in r.getMessage() for r in caplog.records) == 1
    assert all(isinstance(r["numpy"], dict) and isinstance(r["python"], dict) for r in state["partial"]["rng"])
    rng.set_rng_state(state["rng"])  # upgraded to the plain form, and the same state
    after = (random.random(), np.random.random())
    np.random.set_state(old["rng"]["numpy"]), random.setstate(old["rng"]["python"])
    assert after == (random.random(), np.random.random())


@pytest.mark.parametrize(
    "content",
    [
        {"model": {"w": torch.ones(2)}, "epoch": 1, "version": 3, "extra": np.zeros(2)},  # claims to be current
        np.zeros(3),  # not a dict
    ],
)
def test_a_pickle_that_is_no_older_nfbench_checkpoint_is_corrupt(tmp_path, content):
    path = tmp_path / "last.pt"
    torch.save(content, path)
    with pytest.raises(rundir.CorruptCheckpointError, match="last.pt cannot be read"):
        rundir.load_checkpoint(path)


def test_import_nfbench_stays_light():
    code = "import sys, nfbench; print('torch' in sys.modules, callable(nfbench.load_run))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_load_run_without_the_checkpoint_names_it(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  name: resnet20\n")
    with pytest.raises(FileNotFoundError, match="last.pt"):
        nfbench.load_run(tmp_path, which="last")
    with pytest.raises(ValueError, match="which"):
        nfbench.load_run(tmp_path, which="final")


def test_run_without_best_pt_gets_model_safetensors_at_its_end(make_cfg, tmp_path):
    """A run directory with no best.pt (e.g. a branch that never beat its source) ends with the final
    weights in model.safetensors."""
    train(make_cfg(ONE_EPOCH, tmp_path))
    ckpt = tmp_path / "checkpoints"
    (ckpt / "best.pt").unlink()
    (ckpt / "model.safetensors").unlink()
    assert train(make_cfg(ONE_EPOCH, tmp_path))["status"] == "finished"  # resumes at its end: nothing to train
    final = torch.load(ckpt / "last.pt")["model"]
    weights = timm.models.load_state_dict(str(ckpt / "model.safetensors"))
    assert weights.keys() == final.keys() and all(torch.equal(weights[k], final[k]) for k in final)
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert f.metadata()["epoch"] == "1"


def test_tied_weights_are_saved_once_and_load_back(tmp_path):
    """safetensors refuses shared storage: a tied tensor is written under one name and filled back on load."""
    from safetensors.torch import load_model

    def tied() -> torch.nn.Sequential:
        net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
        net[1].weight = net[0].weight
        return net

    net, path = tied(), tmp_path / "model.safetensors"
    rundir.save_weights(path, net.state_dict(), {"epoch": 1}, {})
    with safe_open(str(path), "pt") as f:
        assert len(list(f.keys())) == 3  # one weight, two biases
    fresh = tied()
    load_model(fresh, path, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))


def test_model_safetensors_has_a_checksum_and_a_flipped_byte_is_refused(make_cfg, tmp_path):
    """model.safetensors gets a sha256 sidecar as the checkpoints do; a byte flipped in its tensor data (the
    file still parses, so safetensors alone would load wrong weights) is refused by load_run in one line
    that names the file and the fix, and which="last" still loads."""
    train(make_cfg(ONE_EPOCH, tmp_path))
    weights = tmp_path / "checkpoints" / rundir.WEIGHTS
    side = rundir.checksum_path(weights)
    assert side.read_text() == f"{hashlib.sha256(weights.read_bytes()).hexdigest()}  {weights.name}\n"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # the last tensor's bytes: a valid file with one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(rundir.CorruptCheckpointError, match="model.safetensors.*sha256.*Fix: load best.pt") as e:
        nfbench.load_run(tmp_path)
    assert "\n" not in str(e.value)
    nfbench.load_run(tmp_path, which="last")
