"""trainer.cuda_graph against the eager step and torch.compile (issue 15), ResNet-18 and ResNet-50.

Each configuration is one ``train(cfg)`` (nfbench's whole runner: the CIFAR device loader with crop
and flip, metrics, evaluation and checkpoints outside the timed training pass) in a fresh process,
on CIFAR-10-shaped random pixels, batch 128, bf16, channels_last, the same seed.  Per
configuration:

- images/s: the training pass of the epochs after the first (nfbench's own ``images_per_s``);
- first-epoch extra seconds: epoch 1's time less a steady epoch's (compilation, capture, cuDNN's
  search: what a run pays once before its steps reach full speed);
- the first epoch's per-step losses, against the eager run's (max |difference| over the first
  ``--compare-steps`` steps, and the first epoch's mean loss);
- for trainer.cuda_graph, the model's pure compute: the same captured step replayed back to back
  with nothing around it (no data, metrics or schedule); epoch time / pure compute time is the
  runner's overhead against that minimal loop.

Configurations run in priority order under one wall-clock budget (``--budget``); each has its own
timeout, and what the budget cannot fit is skipped and listed as such.  Writes cuda_graph.json and
cuda_graph.md to ``--out`` and prints the table.

  python benchmarks/cuda_graph.py --out outputs/cuda_graph --budget 170
  python benchmarks/cuda_graph.py --smoke --out /tmp/cg    # CPU rehearsal: tiny model, graph emulated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import compose, launch, runner_overrides, sync, write_fake_cifar10

MODES = {
    "eager": [],
    "cuda_graph": ["trainer.cuda_graph=true"],
    # Issue 22: RandAugment (2 ops, magnitude 9), built on the device in a CUDA graph of its own beside the
    # captured step, against today's other path: eager steps, RandAugment in 8 CPU worker processes.
    "cuda_graph+randaugment": ["trainer.cuda_graph=true", "data.randaugment=true"],
    "eager+randaugment-workers": ["data.randaugment=true", "data.num_workers=8"],
    "compile": ["trainer.compile=true"],
    "compile-reduce-overhead": ["trainer.compile=true", "trainer.compile_mode=reduce-overhead"],
}
# Priority order: what answers the issue first, the long compilations last.
PLAN = [
    ("resnet18", "eager"),
    ("resnet18", "cuda_graph"),
    ("resnet50", "eager"),
    ("resnet50", "cuda_graph"),
    ("resnet18", "compile"),
    ("resnet18", "compile-reduce-overhead"),
    ("resnet50", "compile"),
    ("resnet50", "compile-reduce-overhead"),
]
TIMEOUT_S = {"eager": 45, "cuda_graph": 45, "compile": 90, "compile-reduce-overhead": 100}
RANDAUGMENT_PLAN = [
    ("resnet18", "cuda_graph"),
    ("resnet18", "cuda_graph+randaugment"),
    ("resnet18", "eager+randaugment-workers"),
    ("resnet50", "cuda_graph"),
    ("resnet50", "cuda_graph+randaugment"),
    ("resnet50", "eager+randaugment-workers"),
]
TIMEOUT_S.update({"cuda_graph+randaugment": 45, "eager+randaugment-workers": 60})
MIN_START_S = 20  # a configuration is not started with less budget than this left


def overrides(args: argparse.Namespace, model: str, mode: str, run_dir: Path) -> list[str]:
    common = runner_overrides(args, model, run_dir)
    if args.smoke:
        common += ["trainer.device=cpu", "model.width=4"]
    return [*common, *MODES[mode]]


def pure_replay(cfg, steps: int) -> float:
    """Images/s of the captured step replayed back to back: the model's own compute, no runner around it
    (on a CPU, the smoke rehearsal: the graphed step's code run eagerly on one batch)."""
    from nfbench.engine.graph import GraphedStep
    from nfbench.engine.optim import build_optimizer
    from nfbench.engine.runtime import seed_all
    from nfbench.engine.step import StepObjects
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed_all(cfg.seed)
    net = build_model(cfg.model, build_scheme(cfg.init), 10, 3, 32).to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(net, cfg.optim, device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16")
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = GraphedStep(StepObjects(net, opt, torch.nn.CrossEntropyLoss(), amp, scaler, cfg.optim), channels_last=True)
    x = torch.randn(cfg.data.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (cfg.data.batch_size,), device=device)
    net.train()
    for _ in range(5):  # warm-up steps, the capture and a replay
        step(x, y)
    sync(device)
    replay = step.graph.replay if step.graph is not None else lambda: step(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        replay()
    sync(device)
    return steps * cfg.data.batch_size / (time.perf_counter() - t0)


def run_one(args: argparse.Namespace) -> None:
    """Child process: one configuration, its figures as JSON on the last line of stdout."""
    import nfbench.engine.metrics as em
    from nfbench.engine.loop import train

    if args.smoke and args.mode.startswith("cuda_graph"):  # no CUDA here: the graphed step's code, run eagerly
        import nfbench.engine.loop as nt

        nt.check_device = lambda device, world_size: None
    first: list = []
    init = em.EpochMetrics.__init__

    def keep_first(self, *a, **k):  # the first epoch's per-step losses stay on its EpochMetrics
        init(self, *a, **k)
        if not first:
            first.append(self)

    em.EpochMetrics.__init__ = keep_first  # type: ignore[method-assign]
    run_dir = Path(tempfile.mkdtemp(prefix=f"cg-{args.model}-{args.mode}-"))
    cfg = compose(overrides(args, args.model, args.mode, run_dir))
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steady = rows[1:] or rows
    epoch_s = sorted(r["epoch_s"] for r in steady)[len(steady) // 2]
    out = {
        "model": args.model,
        "mode": args.mode,
        "status": result["status"],
        "wall_s": wall,
        "images_per_s": sorted(r["images_per_s"] for r in steady)[len(steady) // 2],
        "epoch_s": epoch_s,
        "first_epoch_s": rows[0]["epoch_s"],
        "first_epoch_extra_s": rows[0]["epoch_s"] - epoch_s,
        "first_epoch_loss": rows[0]["train_loss"],
        "step_losses": first[0].losses.float().cpu().tolist(),
        "steps_per_epoch": len(first[0].sizes),
    }
    if args.mode == "cuda_graph" and not args.no_pure:
        out["pure_images_per_s"] = pure_replay(cfg, args.replay_steps)
    print(json.dumps(out))


def table(rows: list[dict], compare_steps: int) -> str:
    """The Markdown table: one row per configuration, losses against the same model's eager run."""
    eager = {r["model"]: r for r in rows if r["mode"] == "eager" and "images_per_s" in r}
    pure = {r["model"]: r["pure_images_per_s"] for r in rows if "pure_images_per_s" in r}
    lines = [
        "| model | step | images/s | x eager | first-epoch extra s | epoch / pure compute | "
        f"max abs loss diff, first {compare_steps} steps | first-epoch loss (eager) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "images_per_s" not in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r.get('skipped') or r.get('error', 'failed')} | | | | | |")
            continue
        base = eager.get(r["model"])
        speed = f"{r['images_per_s'] / base['images_per_s']:.2f}" if base else ""
        ratio = f"{pure[r['model']] / r['images_per_s']:.2f}" if r["model"] in pure else ""
        diff = ""
        if base:
            n = min(compare_steps, len(r["step_losses"]), len(base["step_losses"]))
            diff = f"{max(abs(a - b) for a, b in zip(r['step_losses'][:n], base['step_losses'][:n])):.2e}"
            r["max_abs_loss_diff"] = float(diff)
        loss = f"{r['first_epoch_loss']:.5f}" + (f" ({base['first_epoch_loss']:.5f})" if base else "")
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['images_per_s']:,.0f} | {speed} | "
            f"{r['first_epoch_extra_s']:.1f} | {ratio} | {diff} | {loss} |"
        )
    if pure:
        lines.append("")
        lines += [
            f"pure compute (the captured step replayed back to back), {m}: {v:,.0f} images/s" for m, v in pure.items()
        ]
    return "\n".join(lines)


def randaugment_ratios(rows: list[dict]) -> str:
    """Each model's graphed epoch with RandAugment against the same epoch without it (target: >= 0.9)."""
    rate = {(r["model"], r["mode"]): r["images_per_s"] for r in rows if "images_per_s" in r}
    lines = [
        f"{m}: graphed with RandAugment / without = {rate[(m, 'cuda_graph+randaugment')] / rate[(m, 'cuda_graph')]:.3f}"
        + (
            f"; eager, RandAugment in workers / graphed without = "
            f"{rate[(m, 'eager+randaugment-workers')] / rate[(m, 'cuda_graph')]:.3f}"
            if (m, "eager+randaugment-workers") in rate
            else ""
        )
        for m in dict.fromkeys(r["model"] for r in rows)
        if (m, "cuda_graph") in rate and (m, "cuda_graph+randaugment") in rate
    ]
    return "\n\n" + "\n".join(lines) if lines else ""


def child_command(args: argparse.Namespace, model: str, mode: str) -> list[str]:
    """This script run for one configuration, in a process of its own."""
    flags = {
        "--model": model,
        "--mode": mode,
        "--data": args.data,
        "--batch": args.batch,
        "--test-images": args.test_images,
        "--epochs": args.epochs,
        "--precision": args.precision,
        "--init": args.init,
    }
    return [
        sys.executable,
        __file__,
        *(str(v) for kv in flags.items() for v in kv),
        *(["--smoke"] if args.smoke else []),
    ]


def side_by_side(args: argparse.Namespace, t_start: float) -> str:
    """K processes of resnet18 cuda_graph+randaugment at once, each timed by nfbench itself."""
    cmd = [*child_command(args, "resnet18", "cuda_graph+randaugment"), "--no-pure"]
    print(f"[{time.perf_counter() - t_start:.0f} s] {args.side_by_side} x resnet18 cuda_graph+randaugment", flush=True)
    children = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(args.side_by_side)
    ]
    rates = []
    for child in children:
        out, _ = child.communicate(timeout=max(60.0, args.budget))
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"] if child.returncode == 0 else 0.0)
    return (
        f"\n\n{args.side_by_side} side by side, resnet18 cuda_graph+randaugment: "
        f"{' + '.join(f'{r:,.0f}' for r in rates)} = {sum(rates):,.0f} images/s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/cuda_graph"))
    p.add_argument("--budget", type=float, default=170.0, help="wall seconds for every configuration together")
    p.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny width and data, graph emulated eagerly")
    p.add_argument("--train-images", type=int, default=25600)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--init", default="convshort")
    p.add_argument("--replay-steps", type=int, default=300)
    p.add_argument("--compare-steps", type=int, default=50)
    p.add_argument("--only", nargs="*", default=None, help="MODEL:MODE pairs to run (default: the whole plan)")
    p.add_argument(
        "--randaugment",
        action="store_true",
        help="issue 22's plan: each model graphed with and without RandAugment, and the worker path",
    )
    p.add_argument(
        "--side-by-side",
        type=int,
        default=0,
        metavar="K",
        help="then K processes of resnet18 cuda_graph+randaugment at once: their aggregate images/s",
    )
    p.add_argument("--no-pure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model:
        return run_one(args)
    t_start = time.perf_counter()
    if args.smoke:
        args.train_images, args.test_images, args.batch, args.epochs, args.replay_steps = 256, 64, 32, 2, 5
        print(
            "SMOKE (CPU rehearsal): model.width=4, 256 images, batch 32; trainer.cuda_graph runs the graphed "
            "step's code eagerly (no capture; its 'pure compute' is that code on one batch); the compile modes are "
            "skipped (minutes of compilation on a CPU)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nfbench-cuda-graph-"))
    args.data = write_fake_cifar10(work / "data", args.train_images, args.test_images)
    plan = [tuple(s.split(":")) for s in args.only] if args.only else RANDAUGMENT_PLAN if args.randaugment else PLAN
    rows: list[dict] = []
    for model, mode in plan:
        left = args.budget - (time.perf_counter() - t_start)
        row: dict = {"model": model, "mode": mode}
        if args.smoke and mode.startswith("compile"):
            row["skipped"] = "skipped (smoke: compilation on a CPU)"
        elif left < MIN_START_S:
            row["skipped"] = f"skipped (budget: {left:.0f} s left)"
        else:
            limit = min(TIMEOUT_S[mode], left)
            cmd = [*child_command(args, model, mode), "--replay-steps", str(args.replay_steps)]
            print(f"[{time.perf_counter() - t_start:.0f} s] {model} {mode} (limit {limit:.0f} s)", flush=True)
            row.update(launch(cmd, limit))
        rows.append(row)
    md = table(rows, args.compare_steps) + randaugment_ratios(rows)
    if args.side_by_side:
        md += side_by_side(args, t_start)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "batch": args.batch,
        "precision": args.precision,
        "init": args.init,
        "train_images": args.train_images,
        "epochs": args.epochs,
        "smoke": args.smoke,
        "wall_s": time.perf_counter() - t_start,
    }
    header = (
        f"{env['device']}, torch {env['torch']}, {env['cpu_count']} CPU cores; batch {args.batch}, "
        f"{args.precision}, channels_last, init={args.init}, {args.train_images} images x {args.epochs} epochs"
    )
    (args.out / "cuda_graph.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    (args.out / "cuda_graph.md").write_text(f"{header}\n\n{md}\n")
    print(header)
    print(md)
    print("reproduce: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
