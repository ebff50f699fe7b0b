"""Runner overhead: nfbench's training throughput against a minimal hand-written PyTorch loop.

Both train the same model (built by nfbench's registry, same scheme and seed) with the same SGD,
batch, precision and memory format on the same CIFAR-10-shaped data held in memory. The minimal
loop is what one would write by hand: data normalised once on the device, a random permutation per
epoch, forward, loss, zero_grad, backward, step, nothing else. nfbench is ``train(cfg)`` as a user
runs it, timed by its own per-epoch ``images_per_s`` (the training pass; evaluation and checkpoints
excluded), once with its CIFAR recipe (crop + flip, with ``--randaugment`` RandAugment too, on the
device) and once without augmentation.
The three alternate, round after round, in one process; each figure is the median over rounds of
the epochs after each run's first (warm-up, autotuning, compilation).

The minimal loop's images/s is the model's own forward + backward + step rate, so its ratio to
nfbench's is also the epoch time over the model's time for the same number of images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from common import (
    amp_context,
    base_parser,
    compose,
    device_of,
    footer,
    header,
    median,
    model_of,
    sync,
    timed,
    write_fake_cifar10,
)
from torch.nn import functional as F

from nfbench.data.device import in_memory
from nfbench.data.source import build_source
from nfbench.engine.loop import train
from nfbench.engine.optim import build_optimizer
from nfbench.engine.runtime import seed_all
from nfbench.models import build_model
from nfbench.schemes import build_scheme


def minimal_loop(
    cfg, device: torch.device, epochs: int, precision: str, channels_last: bool, compile_: bool
) -> list[float]:
    """Images/s of each epoch of the hand-written loop."""
    src = build_source(cfg.data)
    images, labels = in_memory(src.train)  # type: ignore[misc]
    mean = torch.tensor(src.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(src.std, device=device).view(1, -1, 1, 1)
    x_all = (images.to(device).float() / 255 - mean) / std
    y_all = labels.to(device)
    seed_all(cfg.seed)
    net = build_model(cfg.model, build_scheme(cfg.init), src.num_classes, src.in_chans, src.image_size).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = build_optimizer(net, cfg.optim, device)  # SGD, fused on CUDA, foreach on CPU: as nfbench
    step = torch.compile(net) if compile_ else net
    n, b = len(y_all), cfg.data.batch_size

    def epoch() -> None:
        perm = torch.randperm(n, device=device)
        for start in range(0, n - b + 1, b):
            idx = perm[start : start + b]
            x = x_all[idx]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_context(device, precision):
                loss = F.cross_entropy(step(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    net.train()
    return [(n // b) * b / timed(epoch, device) for _ in range(epochs)]


def nfbench_run(overrides: list[str], run_dir: Path) -> list[float]:
    """Images/s of each epoch of ``train(cfg)``, from its metrics.jsonl."""
    result = train(compose([*overrides, f"trainer.run_dir={run_dir}"]))
    assert result["status"] == "finished", result
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["images_per_s"] for r in rows]


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--init", default="convshort")
    p.add_argument("--train-images", type=int, default=None, help="default: 50000 on CUDA, 1024 on CPU")
    p.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--randaugment", action="store_true", help="nfbench also applies RandAugment")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data.num_workers: with --randaugment, the processes that build its batches",
    )
    a = p.parse_args()
    device = device_of(a)
    cuda = device.type == "cuda"
    model, width = model_of(a, device)
    n_train = a.train_images or (50000 if cuda else 1024)
    header(
        f"runner overhead: {model} (width {width or 'published'}) / {a.init}, batch {a.batch}, "
        f"{n_train} images per epoch, {a.precision}, channels_last={a.channels_last}, compile={a.compile}, "
        f"randaugment={a.randaugment} ({a.workers} workers)",
        device,
    )
    torch.backends.cudnn.benchmark = True  # what train() sets when not deterministic
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_cifar10(Path(tmp) / "data", n_train, n_test=max(a.batch, n_train // 5))
        common = [
            "data=cifar10",
            f"data.root={root}",
            "data.download=false",
            f"data.num_workers={a.workers}",
            f"data.batch_size={a.batch}",
            f"model={model}",
            f"model.width={width or 'null'}",
            f"init={a.init}",
            f"trainer.epochs={a.epochs}",
            f"trainer.device={a.device}",
            f"trainer.precision={a.precision}",
            f"trainer.channels_last={a.channels_last}",
            f"trainer.compile={a.compile}",
            "trainer.progress=false",
            f"data.randaugment={a.randaugment}",
        ]
        no_aug = ["data.crop_padding=0", "data.hflip=false", "data.randaugment=false"]
        rates: dict[str, list[float]] = {"nfbench": [], "nfbench_no_aug": [], "minimal": []}
        for r in range(a.rounds):
            rates["nfbench"] += nfbench_run(common, Path(tmp) / f"run{r}")[1:]
            rates["nfbench_no_aug"] += nfbench_run([*common, *no_aug], Path(tmp) / f"run{r}_noaug")[1:]
            rates["minimal"] += minimal_loop(
                compose(common), device, a.epochs, a.precision, a.channels_last, a.compile
            )[1:]
            sync(device)
    fig = {k: median(v) for k, v in rates.items()}
    aug = "crop+flip+RandAugment" if a.randaugment else "crop+flip"
    labels = {
        "nfbench": f"nfbench, {aug} on the device",
        "nfbench_no_aug": "nfbench, no augmentation",
        "minimal": "minimal hand-written loop",
    }
    for key, label in labels.items():
        print(f"{label:46s} {fig[key]:10.1f} img/s")
    print(
        f"ratio nfbench / minimal: {fig['nfbench'] / fig['minimal']:.3f} with augmentation, "
        f"{fig['nfbench_no_aug'] / fig['minimal']:.3f} without (target >= 0.97)"
    )
    print(
        f"epoch time / model's own forward+backward+step time: {fig['minimal'] / fig['nfbench']:.3f} "
        f"(GPU target <= 1.2)"
    )
    print("per-epoch img/s: " + "; ".join(f"{k}: {', '.join(f'{x:.0f}' for x in v)}" for k, v in rates.items()))
    footer()


if __name__ == "__main__":
    main()
