"""Aggregate training images/s of 1, 2, 4, 8 ... processes sharing one GPU.

At batch 128 the CIFAR networks are bound by the host launching kernels: one process keeps the GPU
busy only a fraction of the time, and jobs of a sweep run side by side fill the rest. Each job is
its own process (as the jobs of a sweep are) training its own network on a random batch already on
the device: nfbench's model, scheme and SGD step, as in ``schemes.py``. The schemes of the jobs
cycle through ``--schemes``, so a phase of N jobs mixes them as a sweep does.

The processes start once; for each job count N, the first N of them train for ``--seconds`` from a
common start time, and the figure is the sum of their images/s (each one's steps over its own time,
the GPU's queue drained at the end).

``--cuda-graph`` times the step ``trainer.cuda_graph=true`` trains with (captured after its warm-up
steps; on a CPU the same code runs eagerly), the one a sweep of launch-bound networks should use.
``--each-alone`` first times every process alone, one after another, so each scheme's own rate is
known beside the aggregates (what scripts/gpu_civitelli_r50.sh sizes its runs from).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from common import base_parser, device_of, footer, header, model_of, sync

from nfbench.config import option_config


def _worker(rank: int, args, commands: mp.Queue, results: mp.Queue) -> None:
    from schemes import Bench  # the same step as benchmarks/schemes.py

    device = device_of(args)
    model, width = model_of(args, device)
    scheme = args.schemes[rank % len(args.schemes)]
    bench = Bench(
        scheme,
        option_config("model", model, width=width),
        args.batch,
        device,
        args.precision,
        args.channels_last,
        args.compile,
        graph=args.cuda_graph,
    )
    for _ in range(args.warmup):
        bench.step()
    sync(device)
    results.put(("ready", rank))
    while (cmd := commands.get()) is not None:
        start, seconds = cmd
        time.sleep(max(0.0, start - time.time()))
        t0, steps = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            bench.step()
            steps += 1
        sync(device)
        results.put((rank, scheme, steps * args.batch / (time.perf_counter() - t0)))


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--schemes", nargs="+", default=["bn", "idshort", "learnscalar", "convshort"])
    p.add_argument("--seconds", type=float, default=6.0, help="timed window per job count")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per process before the first window")
    p.add_argument("--cuda-graph", action="store_true", help="time trainer.cuda_graph's captured step")
    p.add_argument("--each-alone", action="store_true", help="first time each process alone (its scheme's rate)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.cuda_graph and args.compile:
        p.error("--cuda-graph and --compile: choose one (trainer.cuda_graph refuses trainer.compile)")
    device = device_of(args)
    header("concurrent training processes on one device", device)
    model, width = model_of(args, device)
    step = "cuda_graph" if args.cuda_graph else "compiled" if args.compile else "eager"
    print(
        f"{model} (width {width or 'published'}), batch {args.batch}, {args.precision}, "
        f"channels_last={args.channels_last}, {step} step, schemes cycled: {', '.join(args.schemes)}"
    )
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    # --each-alone times every scheme alone, so there is a process for each even beyond the largest job count.
    queues = [ctx.Queue() for _ in range(max(*args.jobs, len(args.schemes) if args.each_alone else 0))]
    procs = [ctx.Process(target=_worker, args=(r, args, q, results), daemon=True) for r, q in enumerate(queues)]
    for proc in procs:
        proc.start()
    for _ in procs:
        results.get()
    alone = []
    if args.each_alone:
        print("| process | scheme | images/s alone |\n| --- | --- | --- |")
        for rank, q in enumerate(queues):
            q.put((time.time() + 0.2, args.seconds))
            _, scheme, rate = results.get()
            alone.append({"rank": rank, "scheme": scheme, "images_per_s": rate})
            print(f"| {rank} | {scheme} | {rate:,.0f} |", flush=True)
    rows = []
    print("| jobs | aggregate images/s | per job | aggregate / 1 job |\n| --- | --- | --- | --- |")
    for n in args.jobs:
        start = time.time() + 1.0
        for q in queues[:n]:
            q.put((start, args.seconds))
        got = [results.get() for _ in range(n)]
        total = sum(r[2] for r in got)
        rows.append({"jobs": n, "images_per_s": total, "per_job": total / n, "schemes": sorted(r[1] for r in got)})
        print(f"| {n} | {total:,.0f} | {total / n:,.0f} | {total / rows[0]['images_per_s']:.2f} |", flush=True)
    for q in queues:
        q.put(None)
    for proc in procs:
        proc.join(timeout=30)
    best = max(rows, key=lambda r: r["images_per_s"])
    print(f"best: {best['jobs']} jobs, {best['images_per_s']:,.0f} images/s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": model,
                    "batch": args.batch,
                    "precision": args.precision,
                    "channels_last": args.channels_last,
                    "step": step,
                    "rows": rows,
                    "alone": alone,
                    "device": str(device),
                    "torch": torch.__version__,
                },
                indent=2,
            )
        )
    footer()


if __name__ == "__main__":
    main()
