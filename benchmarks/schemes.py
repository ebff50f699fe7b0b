"""Each registered scheme's training-step time and peak memory against ``bn`` on the same architecture.

A step is forward + cross-entropy + backward + nfbench's SGD step (its parameter groups, foreach on
CPU, fused on CUDA) on one random batch already on the device, so the figures isolate what the
schemes change: BatchNorm layers, weight standardisation, scalars, conv shortcuts. The schemes are
timed round-robin, ``--rounds`` times, and each figure is the median over rounds.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over a step (parameters, gradients,
momentum, activations, workspace). On a CPU there is no allocator counter, so the figure is the
same sum counted from the tensors themselves: parameters x 3 (weights, gradients, momentum) plus
every distinct tensor autograd saves for backward.
"""

from __future__ import annotations

import torch
from common import amp_context, base_parser, device_of, footer, header, median, model_of, sync, timed
from torch.nn import functional as F

from nfbench.config import ModelConfig, OptimConfig, option_config
from nfbench.engine.graph import GraphedStep
from nfbench.engine.optim import build_optimizer
from nfbench.engine.runtime import seed_all
from nfbench.engine.step import StepObjects
from nfbench.errors import ConfigError
from nfbench.models import build_model
from nfbench.schemes import SCHEMES, build_scheme

MIB = 2**20


class Bench:
    """One scheme's network, optimiser and batch, and its step: eager (optionally compiled), or with
    ``graph`` the step ``trainer.cuda_graph=true`` trains with (nfbench.engine.graph: captured after its
    warm-up steps on CUDA, the same code run eagerly on a CPU)."""

    def __init__(
        self,
        scheme: str,
        model: ModelConfig,
        batch: int,
        device: torch.device,
        precision: str,
        channels_last: bool,
        compile_: bool,
        graph: bool = False,
    ) -> None:
        seed_all(0)
        self.net = build_model(model, build_scheme(option_config("init", scheme)), 10, 3, 32).to(device)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.fmt)
        self.opt = build_optimizer(self.net, OptimConfig(), device)
        self.fwd = torch.compile(self.net) if compile_ else self.net
        self.x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=self.fmt)
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.device, self.precision = device, precision
        amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        objects = StepObjects(
            self.net,
            self.opt,
            torch.nn.CrossEntropyLoss(),
            amp,
            torch.amp.GradScaler(device.type, enabled=False),
            OptimConfig(),
        )
        self.graphed = GraphedStep(objects, channels_last=channels_last) if graph else None

    def step(self) -> None:
        if self.graphed is not None:
            self.graphed(self.x, self.y)
            return
        with amp_context(self.device, self.precision):
            loss = F.cross_entropy(self.fwd(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def peak_memory(self) -> float:
        """MiB at the peak of one step (see the module docstring for what the CPU figure counts)."""
        if self.device.type == "cuda":
            self.opt.zero_grad(set_to_none=True)
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB
        params = {p.data_ptr() for p in self.net.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.step()
        param_bytes = sum(p.numel() * p.element_size() for p in self.net.parameters())
        return (3 * param_bytes + sum(saved.values())) / MIB


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed per round; default 20 on CUDA, 2 on CPU")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--schemes", nargs="*", default=None, help="default: every registered scheme")
    a = p.parse_args()
    device = device_of(a)
    cuda = device.type == "cuda"
    name, width = model_of(a, device)
    model = option_config("model", name, width=width)
    steps = a.steps or (20 if cuda else 2)
    names = a.schemes or SCHEMES.names()
    if "bn" not in names:
        names = ["bn", *names]
    header(
        f"schemes vs bn: {model.name} (width {model.width or 'published'}), batch {a.batch}, {a.precision}, "
        f"channels_last={a.channels_last}, compile={a.compile}",
        device,
    )
    torch.backends.cudnn.benchmark = True
    benches: dict[str, Bench] = {}
    for name in names:
        try:
            benches[name] = Bench(name, model, a.batch, device, a.precision, a.channels_last, a.compile)
            for _ in range(3):  # warm-up: autotuning, compilation, allocator
                benches[name].step()
        except ConfigError as e:
            print(f"{name}: skipped, the scheme does not build this model ({e})")
            benches.pop(name, None)
        except Exception as e:  # one broken scheme must not cost the other figures of a GPU session
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
            benches.pop(name, None)
    times: dict[str, list[float]] = {n: [] for n in benches}
    for _ in range(a.rounds):
        for name, b in benches.items():
            times[name].append(timed(lambda b=b: [b.step() for _ in range(steps)], device) / steps)
    memory = {name: b.peak_memory() for name, b in benches.items()}
    t_bn, m_bn = median(times["bn"]), memory["bn"]
    print(f"{'scheme':12s} {'step ms':>9s} {'img/s':>9s} {'time/bn':>8s} {'peak MiB':>9s} {'mem/bn':>7s}")
    for name in benches:
        t = median(times[name])
        print(
            f"{name:12s} {1e3 * t:9.2f} {a.batch / t:9.1f} {t / t_bn:8.2f} {memory[name]:9.1f} "
            f"{memory[name] / m_bn:7.2f}"
        )
    footer()


if __name__ == "__main__":
    main()
