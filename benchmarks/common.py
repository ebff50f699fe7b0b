"""What the benchmark scripts share: CIFAR-shaped data on disk, configs composed as the CLI composes
them, device-aware timing, and the header every script prints (machine, load, command)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

CIFAR10_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def write_fake_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A CIFAR-10 python release of random pixels (the layout torchvision downloads), so the
    benchmarks run nfbench's own ``data=cifar10`` path anywhere, offline, at any size.
    Throughput does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_file = np.array_split(np.arange(n_train), len(CIFAR10_TRAIN_FILES))
    for name, rows in [*zip(CIFAR10_TRAIN_FILES, per_file), ("test_batch", np.arange(n_test))]:
        entry = {
            "data": rng.integers(0, 256, size=(len(rows), 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=len(rows)).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:  # the release's class names, which torchvision reads
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    return root


def compose(overrides: list[str]) -> DictConfig:
    """The config ``nfbench train OVERRIDES`` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nfbench.cli.main import CONF_DIR
    from nfbench.configstore import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return hydra_compose("config", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for fn(), with the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def base_parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch's CPU threads (default: torch's own); 1 on a shared machine, where a busy "
        "core stalls every parallel region of the other thread",
    )
    p.add_argument("--model", default=None, help="default: resnet18 on CUDA, resnet20 on CPU")
    p.add_argument("--width", type=int, default=None, help="stage-1 width; default: published on CUDA, 8 on CPU")
    p.add_argument("--batch", type=int, default=128)
    return p


def model_of(args: argparse.Namespace, device: torch.device) -> tuple[str, Optional[int]]:
    """(model, stage-1 width): the published ResNet-18 on a GPU, the tests' narrow ResNet-20 on a CPU."""
    cuda = device.type == "cuda"
    return args.model or ("resnet18" if cuda else "resnet20"), args.width if args.width is not None else (
        None if cuda else 8
    )


def device_of(args: argparse.Namespace) -> torch.device:
    """The device to measure on, with torch's thread count set as asked."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def header(title: str, device: torch.device) -> None:
    """What was measured where: the figures mean little without the machine and its load."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    else:
        where = (
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== {title}")
    print(f"device: {where}; torch {torch.__version__}; 1-min load average {load:.2f}")


def footer() -> None:
    print("reproduce: python " + " ".join(shlex.quote(a) for a in sys.argv))


def amp_context(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def launch(cmd: list[str], limit: float) -> Any:
    """Run one configuration in a process group of its own (inductor's compile workers included), killed
    whole at ``limit`` seconds; its figures (the JSON of its last line of output), or what went wrong."""
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"error": f"timed out ({limit:.0f} s)"}
    if child.returncode == 0:
        return json.loads(out.strip().splitlines()[-1])
    print("\n".join((err or out).strip().splitlines()[-15:]), flush=True)
    return {"error": f"failed (exit {child.returncode})"}


def runner_overrides(args: Any, model: str, run_dir: Path, seed: int = 0) -> list[str]:
    """nfbench's whole runner on the fake CIFAR-10 in ``args.data``: ``args.batch``, ``args.test_images``,
    ``args.init``, ``args.epochs`` and ``args.precision``, channels_last, no logger or progress bar."""
    return [
        "data=cifar10",
        f"data.root={args.data}",
        "data.download=false",
        f"data.batch_size={args.batch}",
        f"data.test_subset={args.test_images}",
        f"model={model}",
        f"init={args.init}",
        "logger=none",
        f"trainer.epochs={args.epochs}",
        "trainer.progress=false",
        "trainer.channels_last=true",
        f"trainer.precision={args.precision}",
        f"trainer.run_dir={run_dir}",
        f"seed={seed}",
    ]
