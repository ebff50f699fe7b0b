"""Packed training on one GPU (issue 23): aggregate training images/s of K runs of a sweep in one process,
against one graphed run, against K graphed processes, and as a share of the chip's bf16 rate.

The device call (one H200; 15 minutes of device time in all, the machine's start of 1-2 minutes included),
from a checkout of this branch with ``.evidence/pydeps`` made as benchmarks/README.md section 7 says:

    run(command="bash scripts/gpu_packed.sh", carry=[".evidence/pydeps"], timeout_s=420)

Expected: about 330 s of wall time (BUDGET_S; the gpu-marked test first, then this script on what is left),
about 7 minutes of device time with the start, which leaves one rerun of a part (``--only``) if needed.
What comes back under $OUT: packed.log, packed.json, packed.md.

ResNet-18 and ResNet-50 (nfbench's CIFAR networks, ``init=convshort``), bf16, channels_last, batch 128,
K = 1, 2, 4, 8.  Modes, each measured in a fresh process:

- ``streams``: K networks, each trained by its own :class:`nfbench.engine.graph.GraphedStep` (the step of
  ``trainer.cuda_graph=true``) captured and replayed on a CUDA stream of its own, a step of each in turn: a
  pack's runs without the runner around them.  K = 1 is one graphed run's pure compute, the baseline.
- ``processes``: K processes sharing the GPU, each replaying its own graphed step (what
  ``hydra/launcher=parallel`` with ``trainer.cuda_graph=true`` gives).
- ``stacked``: the K networks as one (benchmarks/stacked.py: stacked parameters, vmap, one captured step of
  grouped convolutions); close to the separate runs, not bit-exact (tests/test_packed.py).
- ``runner``: nfbench's whole runner on CIFAR-shaped random pixels: ``train(cfg)`` for K = 1,
  :func:`nfbench.engine.pack.train_pack` for K > 1 (device data, metrics, checkpoints; evaluation
  outside the timed pass); the aggregate is the runs' own ``images_per_s`` (median over the epochs after
  the first) summed.

FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one training step
(forward and backward) on the CPU.  The chip's share is taken against 790 TFLOP/s, the bf16 matrix
rate measured on this workplace's H200s (an 8192^3 product at 769-798 TFLOP/s), not the datasheet's
989 TFLOP/s dense peak (also shown).  Targets of the issue: ResNet-18 >= 100,000 images/s and
>= 1.7x one graphed run; ResNet-50 >= 1.3x one graphed run.

Configurations run in priority order under one wall-clock budget (``--budget``), each with its own
time limit; what does not fit is listed as skipped.  Writes packed.json and packed.md to ``--out``
after every configuration, and prints the table.

  python benchmarks/packed.py --out outputs/packed --budget 280
  python benchmarks/packed.py --smoke --out /tmp/packed     # CPU rehearsal: tiny widths, graphs run eagerly
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import compose, launch, sync, write_fake_cifar10
from common import runner_overrides as shared_overrides

KS = (1, 2, 4, 8)
# Priority order: the streams (the question) first, then what they are compared with.
PLAN = [
    ("resnet18", "streams"),
    ("resnet50", "streams"),
    ("resnet18", "runner"),
    ("resnet18", "processes"),
    ("resnet18", "stacked"),
    ("resnet50", "runner"),
    ("resnet50", "processes"),
    ("resnet50", "stacked"),
]
TIMEOUT_S = {
    ("resnet18", "streams"): 60,
    ("resnet50", "streams"): 80,
    ("resnet18", "runner"): 60,
    ("resnet50", "runner"): 75,
    ("resnet18", "processes"): 75,
    ("resnet50", "processes"): 90,
    ("resnet18", "stacked"): 60,
    ("resnet50", "stacked"): 75,
}
MIN_START_S = 20
MEASURED_TFLOPS, PEAK_TFLOPS = 790.0, 989.0  # KINDS.md's bf16 8192^3 product on an H200; the datasheet's
TARGETS = {"resnet18": (100_000, 1.7), "resnet50": (None, 1.3)}


def model_cfg(args: argparse.Namespace, model: str):
    from nfbench.config import option_config

    return option_config("model", model, width=args.width) if args.width else option_config("model", model)


def build_run(args: argparse.Namespace, model: str, seed: int, device: torch.device):
    """One run's network (seeded ``seed``), its graphed step and a batch on the device."""
    from nfbench.config import OptimConfig, option_config
    from nfbench.engine.graph import GraphedStep
    from nfbench.engine.optim import build_optimizer
    from nfbench.engine.runtime import seed_all
    from nfbench.engine.step import StepObjects
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    seed_all(seed)
    net = build_model(model_cfg(args, model), build_scheme(option_config("init", args.init)), 10, 3, 32)
    net = net.to(device).to(memory_format=torch.channels_last).train()
    optim = OptimConfig()
    step = GraphedStep(
        StepObjects(
            net,
            build_optimizer(net, optim, device),
            torch.nn.CrossEntropyLoss(),
            amp_of(args, device),
            torch.amp.GradScaler(device.type, enabled=False),
            optim,
        ),
        channels_last=True,
    )
    x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    return step, x, torch.randint(0, 10, (args.batch,), device=device)


def amp_of(args: argparse.Namespace, device: torch.device) -> dict:
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def stream_of(device: torch.device):
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def on(stream):
    import contextlib

    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def rounds_for(seconds: float, runs: list, streams: list, device: torch.device) -> float:
    """Images/s of ``runs`` (step, x, y) taking a step each in turn, each on its stream, for ``seconds``."""
    for _ in range(5):  # warm-up steps, the capture and a replay
        for (step, x, y), stream in zip(runs, streams):
            with on(stream):
                step(x, y)
    sync(device)
    rounds, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for (step, x, y), stream in zip(runs, streams):
            with on(stream):
                step(x, y)
        rounds += 1
    sync(device)
    return rounds * len(runs) * runs[0][1].shape[0] / (time.perf_counter() - t0)


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def mode_streams(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for k in args.ks:
        runs = [build_run(args, args.model, seed, device) for seed in range(k)]
        rows.append({"k": k, "images_per_s": rounds_for(args.seconds, runs, [stream_of(device) for _ in runs], device)})
        del runs
        free(device)
    return rows


def mode_stacked(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from stacked import StackedLoss, StackedNet, stacked_optimizer

    from nfbench.config import OptimConfig, option_config
    from nfbench.engine.graph import GraphedStep
    from nfbench.engine.runtime import seed_all
    from nfbench.engine.step import StepObjects
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    rows = []
    for k in [k for k in args.ks if k > 1]:
        nets = []
        for seed in range(k):
            seed_all(seed)
            nets.append(
                build_model(model_cfg(args, args.model), build_scheme(option_config("init", args.init)), 10, 3, 32)
            )
        net = StackedNet(nets).to(device).train()
        optim = OptimConfig()
        step = GraphedStep(
            StepObjects(
                net,
                stacked_optimizer(net, nets[0], optim, device),
                StackedLoss(torch.nn.CrossEntropyLoss(), k),
                amp_of(args, device),
                torch.amp.GradScaler(device.type, enabled=False),
                optim,
            ),
            channels_last=True,
        )
        x = torch.randn(k * args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (k * args.batch,), device=device)
        rows.append({"k": k, "images_per_s": rounds_for(args.seconds, [(step, x, y)], [None], device)})
        del net, step, nets, x, y
        free(device)
    return rows


def _process_worker(rank: int, args: argparse.Namespace, commands, results) -> None:
    device = torch.device(args.device)
    run = build_run(args, args.model, rank, device)
    rounds_for(0.0, [run], [None], device)  # warm-up and capture
    results.put(("ready", rank))
    start, seconds = commands.get()
    time.sleep(max(0.0, start - time.time()))
    results.put((rank, rounds_for(seconds, [run], [None], device)))


def mode_processes(args: argparse.Namespace, device: torch.device) -> list[dict]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for k in [k for k in args.ks if k > 1]:
        results = ctx.Queue()
        queues = [ctx.Queue() for _ in range(k)]
        procs = [
            ctx.Process(target=_process_worker, args=(r, args, q, results), daemon=True) for r, q in enumerate(queues)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            results.get(timeout=120)
        start = time.time() + 1.0
        for q in queues:
            q.put((start, args.seconds))
        rates = [results.get(timeout=120)[1] for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        rows.append({"k": k, "images_per_s": sum(rates), "per_process": rates})
    return rows


def runner_overrides(args: argparse.Namespace, seed: int, run_dir: Path) -> list[str]:
    common = [*shared_overrides(args, args.model, run_dir, seed), "trainer.cuda_graph=true"]
    return common + ([f"model.width={args.width}", "trainer.device=cpu"] if args.smoke else [])


def mode_runner(args: argparse.Namespace, device: torch.device) -> list[dict]:
    import nfbench.engine.loop as loop
    from nfbench.engine.pack import train_pack

    if device.type != "cuda":  # the CPU rehearsal: the graphed step's code, run eagerly
        loop.check_device = lambda device, world_size: None
    rows = []
    for k in args.runner_ks:
        work = Path(tempfile.mkdtemp(prefix=f"packed-runner-{args.model}-{k}-"))
        cfgs = [compose(runner_overrides(args, seed, work / str(seed))) for seed in range(k)]
        t0 = time.perf_counter()
        if k == 1:
            results = [loop.train(cfgs[0])]
        else:
            results = train_pack([loop.start_of(cfg) for cfg in cfgs], [f"#{s}" for s in range(k)])
        wall = time.perf_counter() - t0
        rates = []
        for seed in range(k):
            history = [json.loads(line) for line in (work / str(seed) / "metrics.jsonl").read_text().splitlines()]
            steady = sorted(r["images_per_s"] for r in (history[1:] or history))
            rates.append(steady[len(steady) // 2])
        rows.append(
            {
                "k": k,
                "images_per_s": sum(rates),
                "per_run": rates,
                "wall_s": wall,
                "status": [r["status"] for r in results],
            }
        )
        free(device)
    return rows


def run_child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as trainer.deterministic=false sets it
    modes = {"streams": mode_streams, "stacked": mode_stacked, "processes": mode_processes, "runner": mode_runner}
    print(json.dumps(modes[args.mode](args, device)))


def flops_per_image(args: argparse.Namespace, model: str) -> float:
    """Matrix and convolution FLOPs of one training step (forward and backward) per image, counted on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    from nfbench.config import option_config
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    net = build_model(model_cfg(args, model), build_scheme(option_config("init", args.init)), 10, 3, 32)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / 2


def table(rows: list[dict], flops: dict[str, float]) -> str:
    """One line per (model, mode, K): aggregate images/s, against one graphed run (streams K=1) and K graphed
    processes, TFLOP/s and the share of the chip."""
    one = {r["model"]: r["images_per_s"] for r in rows if r.get("mode") == "streams" and r.get("k") == 1}
    procs = {(r["model"], r["k"]): r["images_per_s"] for r in rows if r.get("mode") == "processes"}
    lines = [
        "| model | mode | K | aggregate images/s | per run | x one graphed run | x K graphed processes | "
        "TFLOP/s | share of 790 | share of 989 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "images_per_s" not in r:
            lines.append(f"| {r['model']} | {r['mode']} | | {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        rate, k = r["images_per_s"], r["k"]
        tflops = rate * flops[r["model"]] / 1e12
        base = f"{rate / one[r['model']]:.2f}" if r["model"] in one else ""
        vs = f"{rate / procs[(r['model'], k)]:.2f}" if (r["model"], k) in procs else ("1.00" if k == 1 else "")
        lines.append(
            f"| {r['model']} | {r['mode']} | {k} | {rate:,.0f} | {rate / k:,.0f} | {base} | {vs} | "
            f"{tflops:.1f} | {tflops / MEASURED_TFLOPS:.1%} | {tflops / PEAK_TFLOPS:.1%} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Each model's best pack (streams or stacked, K > 1) against the issue's targets."""
    out = []
    for model, (floor, ratio) in TARGETS.items():
        one = next(
            (
                r["images_per_s"]
                for r in rows
                if r.get("model") == model and r.get("mode") == "streams" and r.get("k") == 1
            ),
            None,
        )
        packs = [
            r
            for r in rows
            if r.get("model") == model
            and r.get("mode") in ("streams", "stacked")
            and r.get("k", 1) > 1
            and "images_per_s" in r
        ]
        if one is None or not packs:
            out.append(f"{model}: not measured")
            continue
        best = max(packs, key=lambda r: r["images_per_s"])
        met = best["images_per_s"] / one >= ratio and (floor is None or best["images_per_s"] >= floor)
        need = f">= {floor:,} images/s and " if floor else ""
        out.append(
            f"{model}: best {best['mode']} K={best['k']}: {best['images_per_s']:,.0f} images/s, "
            f"{best['images_per_s'] / one:.2f}x one graphed run (target {need}>= {ratio}x): "
            f"{'met' if met else 'not met'}"
        )
    return out


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/packed"))
    p.add_argument("--budget", type=float, default=280.0, help="wall seconds for every configuration together")
    p.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny widths and data, graphs run eagerly")
    p.add_argument("--ks", type=int, nargs="+", default=list(KS))
    p.add_argument("--runner-ks", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seconds", type=float, default=2.0, help="timed window per K")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--init", default="convshort")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--train-images", type=int, default=25600)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="MODEL:MODE pairs to run (default: the whole plan)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    return p.parse_args()


def child_command(args: argparse.Namespace, model: str, mode: str) -> list[str]:
    cmd = [
        sys.executable,
        __file__,
        "--model",
        model,
        "--mode",
        mode,
        "--data",
        str(args.data),
        "--device",
        args.device,
        "--batch",
        str(args.batch),
        "--precision",
        args.precision,
        "--init",
        args.init,
        "--seconds",
        str(args.seconds),
        "--train-images",
        str(args.train_images),
        "--test-images",
        str(args.test_images),
        "--epochs",
        str(args.epochs),
        "--ks",
        *map(str, args.ks),
        "--runner-ks",
        *map(str, args.runner_ks),
    ]
    return cmd + (["--width", str(args.width)] if args.width else []) + (["--smoke"] if args.smoke else [])


def main() -> None:
    args = parse()
    if args.model:
        return run_child(args)
    t_start = time.perf_counter()
    if args.smoke:
        args.ks, args.runner_ks, args.seconds, args.batch, args.width = [1, 2], [1, 2], 0.3, 16, 4
        args.train_images, args.test_images, args.epochs = 128, 32, 2
        print(
            "SMOKE (CPU rehearsal): width 4, batch 16, K = 1, 2, 0.3 s windows; the graphed step's code runs "
            "eagerly (no capture, no streams): the figures rehearse the script, they measure nothing"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = write_fake_cifar10(
        Path(tempfile.mkdtemp(prefix="nfbench-packed-")) / "data", args.train_images, args.test_images
    )
    flops = {model: flops_per_image(args, model) for model in ("resnet18", "resnet50")}
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "batch": args.batch,
        "precision": args.precision,
        "init": args.init,
        "smoke": args.smoke,
        "flops_per_image": flops,
        "tflops_measured": MEASURED_TFLOPS,
        "tflops_peak": PEAK_TFLOPS,
    }
    rows: list[dict] = []
    for model, mode in [tuple(s.split(":")) for s in args.only] if args.only else PLAN:
        left = args.budget - (time.perf_counter() - t_start)
        if left < MIN_START_S:
            rows.append({"model": model, "mode": mode, "skipped": f"skipped (budget: {left:.0f} s left)"})
            continue
        limit = min(TIMEOUT_S[(model, mode)] * (3 if args.smoke else 1), left)
        print(f"[{time.perf_counter() - t_start:.0f} s] {model} {mode} (limit {limit:.0f} s)", flush=True)
        found = launch(child_command(args, model, mode), limit)
        if isinstance(found, dict):
            rows.append({"model": model, "mode": mode, **found})
        else:
            rows += [{"model": model, "mode": mode, **r} for r in found]
        env["wall_s"] = time.perf_counter() - t_start
        (args.out / "packed.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
        (args.out / "packed.md").write_text(table(rows, flops) + "\n\n" + "\n".join(verdicts(rows)) + "\n")
    print(
        f"{env['device']}, torch {env['torch']}; batch {args.batch}, {args.precision}, channels_last, "
        f"init={args.init}; FLOPs per image (forward + backward): "
        + ", ".join(f"{m} {f / 1e9:.2f} G" for m, f in flops.items())
    )
    print(table(rows, flops))
    print("\n".join(verdicts(rows)))
    print("reproduce: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
