"""Scale-out on the CPU: DDP with gloo equals one process, exact sharded evaluation, preemption
(SIGTERM checkpoints and resumes exactly; SIGKILL loses at most checkpoint_every_steps), a failing
rank ends the job, and a Hydra sweep through submitit's local launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nfbench import rundir
from nfbench.data.loaders import build_loaders
from nfbench.data.source import build_source
from nfbench.engine import distributed
from nfbench.engine.loop import train
from nfbench.errors import ConfigError

# No augmentation, so that one process and two see the same images (only the split differs).
DDP = [
    "data=digits",
    "data.train_subset=256",
    "data.test_subset=120",
    "data.batch_size=32",
    "data.crop_padding=0",
    "model=resnet20",
    "model.width=4",
    "init=convshort",
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "seed=3",
]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def test_two_process_ddp_equals_one_process(make_cfg, tmp_path):
    one = train(make_cfg(DDP, tmp_path / "one"))
    two = train(make_cfg([*DDP, "trainer.devices=2"], tmp_path / "two"))
    assert two["world_size"] == 2 and two["status"] == "finished"
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        # Gradients are averaged over ranks in another order: equal up to float rounding.
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # Evaluation sums hits over disjoint shards: the same counts as one process.
    assert two["test_top1"] == one["test_top1"] and two["test_top5"] == one["test_top5"]
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert (tmp_path / "two" / "result.json").exists() and not list(tmp_path.glob("two/*rank*"))


def test_shards_cover_every_sample_once(make_cfg):
    cfg = make_cfg(["data=digits", "data.batch_size=64", "data.on_device=false"])
    src = build_source(cfg.data)
    shards = [build_loaders(cfg.data, src, seed=0, rank=r, world_size=2)[1] for r in range(2)]
    tests = sorted(i for t in shards for i in t.dataset.indices)
    assert tests == list(range(len(src.test)))  # exact: no padding, no duplicates
    with pytest.raises(ConfigError, match="divisible"):
        build_loaders(cfg.data, src, seed=0, rank=0, world_size=3)  # a global batch of 64 over 3 ranks


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_validation_shards_cover_every_image_once(make_cfg, on_device):
    """The validation set is sharded as the test set is: rank r takes images r, r + 2, ... of the one-process
    order, so the ranks' images are disjoint and together exactly the set; the device path serves the same."""
    from nfbench.data.loaders import eval_loader

    cfg = make_cfg(["data=digits", "data.val_size=101", "data.test_batch_size=16", f"data.on_device={on_device}"])
    src = build_source(cfg.data)

    def images(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        batches = list(eval_loader(cfg.data, src, src.val, rank, world_size))
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    x1, y1 = images(0, 1)
    assert len(y1) == 101
    for rank in range(2):
        x, y = images(rank, 2)
        assert torch.equal(x, x1[rank::2]) and torch.equal(y, y1[rank::2])


@pytest.mark.slow
def test_two_process_validation_equals_one_process(make_cfg, tmp_path):
    """Validation metrics are summed over disjoint shards (51 + 50 images): the same counts as one process."""
    cfg = [*DDP, "data.val_size=101"]
    train(make_cfg(cfg, tmp_path / "one"))
    train(make_cfg([*cfg, "trainer.devices=2"], tmp_path / "two"))
    one, two = (rundir.read_metrics(tmp_path / run / "metrics.jsonl") for run in ("one", "two"))
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert (a["val_top1"], a["val_top5"]) == (b["val_top1"], b["val_top5"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_global_batch_union_matches_single_process(make_cfg):
    cfg = make_cfg(["data=digits", "data.batch_size=64", "data.on_device=false"])
    src = build_source(cfg.data)
    single = build_loaders(cfg.data, src, seed=1)[0]
    ranks = [build_loaders(cfg.data, src, seed=1, rank=r, world_size=2)[0] for r in range(2)]
    for loader in [single, *ranks]:
        loader.sampler.set_epoch(2)
    idx = list(single.sampler)
    r0, r1 = list(ranks[0].sampler), list(ranks[1].sampler)
    for step in range(len(ranks[0])):
        local = r0[step * 32 : (step + 1) * 32] + r1[step * 32 : (step + 1) * 32]
        assert sorted(local) == sorted(idx[step * 64 : (step + 1) * 64])


def _fail_on_rank_one() -> None:
    env = distributed.detect()
    distributed.setup(env, "cpu")
    if env.rank == 1:
        raise ValueError("rank 1 cannot go on")
    distributed.barrier()  # rank 0 would wait here for ever without the watchdog


def test_a_failing_rank_ends_the_job_promptly():
    import torch.multiprocessing as mp

    t0 = time.time()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 cannot go on"):
        distributed.spawn(2, _fail_on_rank_one)
    assert time.time() - t0 < 60


def nfbench_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nfbench.cli", "train", *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


# The full digits training set in batches of 32 (44 steps per epoch): long enough to stop mid-epoch.
PREEMPT = [
    "data=digits",
    "data.batch_size=32",
    "model=resnet20",
    "model.width=4",
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "trainer.log_every=1",
]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_is_exact(tmp_path):
    reference = nfbench_train(tmp_path / "ref", *PREEMPT)
    assert reference.wait(timeout=600) == 0, reference.communicate()[0]
    proc = nfbench_train(tmp_path / "run", *PREEMPT, "trainer.checkpoint_every_steps=0")
    wait_for(tmp_path / "run" / "checkpoints" / "last.pt", proc)  # the end of epoch 1
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["partial"] is not None and 0 < state["partial"]["batches_done"] < 44, "stopped mid-epoch"
    again = nfbench_train(tmp_path / "run", *PREEMPT)
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0 and "resumed from" in out, out
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["epoch"] for m in rundir.read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_sigkill_loses_at_most_checkpoint_every_steps(tmp_path):
    proc = nfbench_train(tmp_path, *PREEMPT, "trainer.checkpoint_every_steps=4")
    wait_for(tmp_path / "checkpoints" / "last.pt", proc)
    proc.kill()
    proc.wait(timeout=60)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    if state["partial"] is None:  # killed at an epoch's end: that epoch's checkpoint
        assert state["epoch"] >= 1
    else:  # killed mid-epoch: the last multiple of checkpoint_every_steps batches was saved
        assert state["epoch"] in (0, 1) and state["partial"]["batches_done"] % 4 == 0
    again = nfbench_train(tmp_path, *PREEMPT, "trainer.checkpoint_every_steps=4")
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0 and "resumed from" in out, out
    result = rundir.read_json(tmp_path / "result.json")
    assert result["status"] == "finished" and result["epochs"] == 2


@pytest.mark.slow
def test_multirun_through_submitit_local(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            "-m",
            "hydra/launcher=local",
            "seed=0,1",
            "model.width=4",
            "trainer.epochs=1",
            "data.train_subset=128",
            "data.test_subset=64",
            "trainer.progress=false",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    for run in runs:
        result = rundir.read_json(run / "result.json")
        assert result["status"] == "finished" and (run / "checkpoints" / "last.pt").exists()
        assert (run / "metrics.jsonl").exists() and (run / "env.json").exists()
    assert {rundir.read_json(r / "result.json")["seed"] for r in runs} == {0, 1}


@pytest.mark.slow
def test_ddp_sigterm_mid_epoch_resumes_to_the_same_run(tmp_path):
    """SIGTERM to `nfbench train trainer.devices=2` reaches both ranks, which checkpoint at the same
    step; the resumed run's weights and per-epoch metrics equal an uninterrupted 2-process run's."""
    cfg = [*PREEMPT, "trainer.devices=2", "trainer.log_every=2", "data.crop_padding=0"]
    reference = nfbench_train(tmp_path / "ref", *cfg)
    assert reference.wait(timeout=600) == 0, reference.communicate()[0]
    proc = nfbench_train(tmp_path / "run", *cfg)
    wait_for(tmp_path / "run" / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["partial"] is not None and len(state["partial"]["rng"]) == 2
    again = nfbench_train(tmp_path / "run", *cfg)
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_rows = rundir.read_metrics(tmp_path / "ref" / "metrics.jsonl")
    run_rows = rundir.read_metrics(tmp_path / "run" / "metrics.jsonl")
    for key in ("train_loss", "train_top1", "test_loss", "test_top1"):
        assert [r[key] for r in run_rows] == pytest.approx([r[key] for r in ref_rows], rel=1e-9), key


@pytest.mark.slow
def test_multirun_jobs_run_side_by_side_with_the_parallel_launcher(tmp_path):
    """hydra/launcher=parallel (Hydra's joblib launcher) runs the jobs of a sweep at the same time, each
    in its own process and run directory: how several CIFAR jobs share one GPU.  With RandAugment built in
    DataLoader workers, as the CIFAR presets do: inside a loky process those once failed to start."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            "-m",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            "seed=0,1",
            "model.width=4",
            # 10 epochs (about 2 s a job here): two jobs' starts came 0.4 s apart on CI, longer than 2 epochs took
            "trainer.epochs=10",
            "data.train_subset=256",
            "data.test_subset=64",
            "data.randaugment=true",
            "data.num_workers=2",
            "trainer.progress=false",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    assert {rundir.read_json(r / "result.json")["seed"] for r in runs} == {0, 1}
    assert all(rundir.read_json(r / "result.json")["status"] == "finished" for r in runs)
    # Side by side: each job started (env.json) before the other one ended (result.json).
    start = [(r / "env.json").stat().st_mtime for r in runs]
    end = [(r / "result.json").stat().st_mtime for r in runs]
    assert start[0] < end[1] and start[1] < end[0], (start, end)
