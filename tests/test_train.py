"""The training loop end to end: the quick start, the run directory, exact resume, checkpoint safety,
divergence, schedules, parameter groups and the device switches (on the CPU)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from nfbench import rundir
from nfbench.engine.loop import train
from nfbench.engine.optim import param_groups
from nfbench.models import build_model
from nfbench.schemes import build_scheme
from tests.conftest import TINY


def load_weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=False)["model"]


def test_quickstart_end_to_end(make_cfg, tmp_path):
    """The README's first line: `nfbench train experiment=quickstart` reaches >= 90% (issue 2)."""
    cfg = make_cfg(["experiment=quickstart", "trainer.progress=false"], tmp_path)
    result = train(cfg)
    assert result["status"] == "finished" and result["epochs"] == cfg.trainer.epochs == 30
    assert result["test_top1"] >= 90.0, result
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("test_top1", "test_loss", "train_loss", "epochs", "params", "wall_s"):
        assert key in on_disk
    assert on_disk["params"] == sum(p.numel() for p in load_weights(tmp_path).values())
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 31))  # epoch 1 is the first
    for key in ("lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "images_per_s", "wall_s"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["world_size"] == 1
    assert env["versions"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert "git_commit" in env and "git_dirty" in env and env["device"] == "cpu"
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)
    assert best["best_top1"] == max(r["test_top1"] for r in rows) and best["best_on"] == "test_top1"
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "config"):
        assert key in last
    assert last["epoch"] == 30 and last["config"]["init"]["name"] == "convshort"
    assert (tmp_path / "config.yaml").exists()


class Killed(BaseException):
    pass


def kill_after_epoch(monkeypatch, epoch: int) -> None:
    """Make the run die right after it has checkpointed the end of ``epoch`` (counting from 1), as a crash or
    `kill` would."""
    save = rundir.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        save(path, state)
        if path.name == rundir.LAST and state["epoch"] == epoch and not state["partial"]:
            raise Killed

    monkeypatch.setattr(rundir, "save_checkpoint", save_then_die)


def train_killed_after(epoch: int, cfg: DictConfig, monkeypatch) -> None:
    """Train ``cfg`` until it has checkpointed the end of ``epoch`` (counting from 1), and die there."""
    with monkeypatch.context() as m:
        kill_after_epoch(m, epoch)
        with pytest.raises(Killed):
            train(cfg)


@pytest.mark.parametrize("init", ["convshort", "bn"])
def test_resume_gives_identical_weights(make_cfg, tmp_path, init, monkeypatch):
    """Stopped after epoch 2 of 4 and resumed == uninterrupted, bit for bit (deterministic, CPU)."""
    cfg = [
        *TINY,
        f"init={init}",
        "trainer.deterministic=true",
        "data.randaugment=true",
        "optim.weight_decay=5e-4",
        "trainer.epochs=4",
    ]
    full = train(make_cfg(cfg, tmp_path / "full"))
    train_killed_after(2, make_cfg(cfg, tmp_path / "split"), monkeypatch)
    assert len(rundir.read_metrics(tmp_path / "split" / "metrics.jsonl")) == 2
    # The same command again: resumes automatically from the run directory's checkpoints/last.pt.
    resumed = train(make_cfg(cfg, tmp_path / "split"))
    a, b = load_weights(tmp_path / "full"), load_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["test_top1"] == full["test_top1"] and resumed["epochs"] == 4
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "split" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_resume_from_another_run_directory(make_cfg, tmp_path, monkeypatch):
    common = [*TINY, "trainer.deterministic=true", "trainer.epochs=2"]
    train_killed_after(1, make_cfg(common, tmp_path / "first"), monkeypatch)
    train(make_cfg(common, tmp_path / "full"))
    result = train(make_cfg([*common, f"trainer.resume={tmp_path / 'first'}"], tmp_path / "second"))
    assert result["status"] == "finished"
    a, b = load_weights(tmp_path / "full"), load_weights(tmp_path / "second")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_last_checkpoint_is_reported_and_best_is_kept(make_cfg, tmp_path):
    train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    best = tmp_path / "checkpoints" / "best.pt"
    best_bytes = best.read_bytes()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"truncated by a crash")
    with pytest.raises(rundir.CorruptCheckpointError) as e:
        train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    assert "last.pt cannot be read" in str(e.value) and f"trainer.resume={best}" in str(e.value)
    assert best.read_bytes() == best_bytes
    # The advice works: resuming from best.pt finishes the run.
    assert train(make_cfg([*TINY, "trainer.epochs=1", f"trainer.resume={best}"], tmp_path))["epochs"] == 1


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    rundir.save_checkpoint(target, {"model": {}, "epoch": 0})
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint(target, {"model": {"w": torch.ones(3)}, "epoch": 1})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temporary file left
    monkeypatch.undo()
    assert rundir.load_checkpoint(target)["epoch"] == 0  # and the old checkpoint still verifies


def test_divergence_is_recorded_not_raised(make_cfg, tmp_path):
    result = train(make_cfg([*TINY, "init=plain", "optim.lr=1e6"], tmp_path))
    assert result["status"] == "diverged"
    info = result["divergence"]
    assert info["epoch"] == 1 and 0 <= info["step"] < 8 and info["loss"] is None and info["loss_str"] == "nan"
    assert info["lr"] == 1e6
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_divergence_keeps_last_good_checkpoint(make_cfg, tmp_path, monkeypatch):
    train_killed_after(1, make_cfg([*TINY, "trainer.epochs=3"], tmp_path), monkeypatch)
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["model"] = {
        k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    rundir.save_checkpoint(last, state)  # a poisoned network: its first loss is NaN
    poisoned = last.read_bytes()
    result = train(make_cfg([*TINY, "trainer.epochs=3"], tmp_path))
    assert result["status"] == "diverged" and result["divergence"]["epoch"] == 2
    assert result["divergence"]["step"] == 8  # the first step of epoch 2 (8 steps per epoch)
    assert last.read_bytes() == poisoned  # nothing written after the divergence
    assert result["epochs"] == 1


def test_cosine_per_epoch_matches_the_formula(make_cfg, tmp_path):
    """lr_e = lr/2 (1 + cos(pi e / E)), stepped once per epoch (Civitelli et al. section 4)."""
    train(make_cfg([*TINY, "trainer.epochs=4", "optim.lr=0.2"], tmp_path))
    lrs = [r["lr"] for r in rundir.read_metrics(tmp_path / "metrics.jsonl")]
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


def test_warmup_then_cosine_per_step(make_cfg):
    from nfbench.engine.optim import build_scheduler

    cfg = make_cfg(["sched.per_step=true", "sched.warmup_epochs=1", "trainer.epochs=3"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, cfg.sched, epochs=3, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Linear warmup from 1/11 to 1 over 10 steps, then cosine over the remaining 20.
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 20)))


def test_param_groups_tag_scalars(make_cfg):
    cfg = make_cfg(
        ["init=learnscalar", "optim.scalar_lr_mult=0.1", "optim.weight_decay=1e-4", "optim.no_decay_bias=true"]
    )
    net = build_model(cfg.model, build_scheme(cfg.init), 10, 3, 32)
    groups = {g["name"]: g for g in param_groups(net, cfg.optim)}
    # resnet20 has 9 blocks; 7 keep an identity shortcut (the 2 transitions use a 1x1 conv) -> 7 alphas.
    assert len(groups["scalars"]["params"]) == 7
    assert groups["scalars"]["lr"] == pytest.approx(cfg.optim.lr * 0.1) and groups["scalars"]["weight_decay"] == 0
    assert len(groups["no_decay"]["params"]) == 1  # the classifier's bias
    assert groups["weights"]["weight_decay"] == 1e-4
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "switches",
    [
        ["trainer.precision=bf16"],
        ["trainer.precision=fp16"],
        ["trainer.channels_last=true"],
        ["trainer.mixup_alpha=1.0", "trainer.cutmix_alpha=1.0", "trainer.label_smoothing=0.1"],
        ["optim.agc=0.01", "init=convshort"],
        ["optim.clip_grad_norm=1.0", "init=bn"],
        ["sched=multistep", "sched.milestones=[1]", "sched.per_step=true", "sched.warmup_epochs=0.5"],
    ],
)
def test_training_switches_run_on_cpu(make_cfg, tmp_path, switches):
    result = train(make_cfg([*TINY, "trainer.epochs=1", *switches], tmp_path))
    assert result["status"] == "finished" and math.isfinite(result["train_loss"])
    # top-1 is a count of TINY's 128 test images, and the number the last epoch's metrics recorded.
    correct = result["test_top1"] * 128 / 100
    assert correct == round(correct) and 0 <= correct <= 128
    assert result["test_top1"] == rundir.read_metrics(tmp_path / "metrics.jsonl")[-1]["test_top1"]


def test_fp16_uses_a_grad_scaler(make_cfg, tmp_path):
    train(make_cfg([*TINY, "trainer.epochs=1", "trainer.precision=fp16"], tmp_path))
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["scaler"]
    assert scaler and scaler["scale"] > 0  # an enabled GradScaler has state; a disabled one saves {}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_torch_compile_trains_as_eager_does(make_cfg, tmp_path, mode):
    """A compiled run (inductor; on a CPU reduce-overhead compiles without CUDA graphs) follows the eager
    run: same weights and BatchNorm running statistics to float tolerance after an epoch of 8 steps."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    torch._dynamo.reset()
    cfg = [*TINY, "trainer.epochs=1", "init=bn", "trainer.deterministic=true"]
    eager = train(make_cfg(cfg, tmp_path / "eager"))
    extra = ["trainer.compile=true"] + ([f"trainer.compile_mode={mode}"] if mode else [])
    compiled = train(make_cfg([*cfg, *extra], tmp_path / "compiled"))
    a, b = load_weights(tmp_path / "eager"), load_weights(tmp_path / "compiled")
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)


def test_real_cifar10_subset_learns(make_cfg, tmp_path, cifar10_jpeg_subset):
    """2,000 real CIFAR-10 training images, a narrow ResNet-20, 4 epochs: well above the 10% chance level.

    BatchNorm is the scheme that learns fastest in a handful of steps (the normalization-free ones
    start slower, as Civitelli et al.'s Fig. 3 shows). The same settings gave 36.4% after 5 epochs."""
    cfg = make_cfg(
        [
            "data=imagefolder",
            f"data.root={cifar10_jpeg_subset}",
            "data.num_workers=0",
            "data.batch_size=64",
            "model=resnet20",
            "model.width=8",
            "init=bn",
            "optim.lr=0.1",
            "trainer.epochs=4",
            "trainer.progress=false",
        ],
        tmp_path,
    )
    result = train(cfg)
    assert result["test_top1"] >= 25.0, result


def scripted_evaluate(monkeypatch, top1: dict[str, list[float]]) -> None:
    """Make each evaluation of a split return the next of its scripted top-1 values."""
    import nfbench.engine.loop as train_module

    calls = {split: 0 for split in top1}

    def evaluate(net, loader, device, amp, channels_last, stop=None, split="test"):
        value = top1[split][calls[split]]
        calls[split] += 1
        return {f"{split}_loss": 1.0, f"{split}_top1": value, f"{split}_top5": 100.0}

    monkeypatch.setattr(train_module, "evaluate", evaluate)


def test_best_checkpoint_is_selected_on_validation_not_test(make_cfg, tmp_path, monkeypatch):
    """Validation peaks at epoch 2, the test set at epoch 3: best.pt and every best figure follow validation."""
    scripted_evaluate(monkeypatch, {"val": [10.0, 30.0, 20.0], "test": [40.0, 20.0, 50.0]})
    result = train(make_cfg([*TINY, "trainer.epochs=3", "data.val_size=0.1"], tmp_path))
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["val_top1"] for r in rows] == [10.0, 30.0, 20.0]
    assert all("val_loss" in r and "val_top5" in r for r in rows)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == max(rows, key=lambda r: r["val_top1"])["epoch"] == 2
    assert max(rows, key=lambda r: r["test_top1"])["epoch"] == 3
    assert (result["best_val_top1"], result["best_epoch"], result["test_top1_at_best_val"]) == (30.0, 2, 20.0)
    assert result["test_top1"] == 50.0 and result["val_top1"] == 20.0 and "best_test_top1" not in result
    assert result["best_selected_on"] == "val_top1"


def test_without_validation_best_is_test_selected_and_says_so(make_cfg, tmp_path, monkeypatch):
    scripted_evaluate(monkeypatch, {"test": [40.0, 20.0, 30.0]})
    result = train(make_cfg([*TINY, "trainer.epochs=3"], tmp_path))
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)["epoch"] == 1
    assert (result["best_selected_on"], result["best_test_top1"], result["best_epoch"]) == ("test_top1", 40.0, 1)
    assert "best_val_top1" not in result and "val_top1" not in rundir.read_metrics(tmp_path / "metrics.jsonl")[0]


def test_resume_with_validation_is_exact_and_keeps_the_best(make_cfg, tmp_path, monkeypatch):
    """Killed after epoch 2 of 3 and resumed == uninterrupted: weights, validation metrics and best.pt."""
    cfg = [*TINY, "trainer.epochs=3", "trainer.deterministic=true", "data.val_size=50"]
    full = train(make_cfg(cfg, tmp_path / "full"))
    train_killed_after(2, make_cfg(cfg, tmp_path / "split"), monkeypatch)
    resumed = train(make_cfg(cfg, tmp_path / "split"))
    a, b = load_weights(tmp_path / "full"), load_weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    untimed = [
        [
            {k: v for k, v in r.items() if k not in ("images_per_s", "epoch_s", "wall_s")}
            for r in rundir.read_metrics(tmp_path / run / "metrics.jsonl")
        ]
        for run in ("full", "split")
    ]
    assert untimed[0] == untimed[1] and all("val_top1" in r for r in untimed[0])
    for key in ("best_val_top1", "best_epoch", "test_top1_at_best_val", "val_top1", "test_top1"):
        assert resumed[key] == full[key], key
    best = [torch.load(tmp_path / run / "checkpoints" / "best.pt", weights_only=False) for run in ("full", "split")]
    assert best[0]["epoch"] == best[1]["epoch"] == full["best_epoch"]


def test_resume_refuses_another_validation_split(make_cfg, tmp_path, monkeypatch):
    """data.val_size changes the training set: a resume under another value is refused, naming the key."""
    from nfbench.errors import ConfigError

    cfg = [*TINY, "trainer.epochs=2", "data.val_size=0.1"]
    train_killed_after(1, make_cfg(cfg, tmp_path), monkeypatch)
    for other in ("data.val_size=0.2", "data.val_size=null"):
        with pytest.raises(ConfigError, match=r"data\.val_size"):
            train(make_cfg([*cfg, other], tmp_path))
