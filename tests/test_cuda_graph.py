"""trainer.cuda_graph (nfbench/engine/graph.py): the captured step trains as the eager step does.

On a CPU the graphed step runs eagerly through the same code (warm-up steps, static buffers, the
learning rates as tensors the scheduler's floats are written into, the partial-batch fallback),
so these tests check everything but the capture itself against train.py's eager step, to the bit.
The ``gpu`` tests compare capture and replay with eager training on a CUDA device.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nfbench import rundir
from nfbench.config import OptimConfig, SchedConfig, check_values, option_config
from nfbench.engine.graph import WARMUP_STEPS, GraphedStep, check_device
from nfbench.engine.loop import train
from nfbench.engine.optim import build_optimizer, build_scheduler, clip_gradients
from nfbench.engine.step import StepObjects
from nfbench.errors import ConfigError
from nfbench.models import build_model
from nfbench.schemes import build_scheme
from tests.conftest import TINY

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(
    "kind", [dict(foreach=True), dict(foreach=False), dict(fused=True)], ids=["foreach", "for-loop", "fused"]
)
def test_sgd_reads_the_lr_tensor_changed_in_place(kind):
    """The graph keeps the tensor, not its value: SGD must read the tensor at each step."""
    p = nn.Parameter(torch.ones(4))
    lr = torch.tensor(0.1)
    opt = torch.optim.SGD([p], lr=0.5, momentum=0.9, weight_decay=0.01, **kind)
    opt.param_groups[0]["lr"] = lr
    p.grad = torch.full((4,), 2.0)
    opt.step()  # buf = g + wd * p = 2.01; p = 1 - 0.1 * 2.01
    assert torch.allclose(p.detach(), torch.full((4,), 1 - 0.1 * 2.01))
    lr.fill_(0.3)
    before = p.detach().clone()
    opt.step()  # buf = 0.9 * 2.01 + 2 + 0.01 * p
    buf = 0.9 * 2.01 + 2.0 + 0.01 * before
    assert torch.allclose(p.detach() - before, -0.3 * buf)


def _net_and_opt(optim: OptimConfig, per_step_epochs: int = 4, steps: int = 10):
    torch.manual_seed(0)
    net = build_model(option_config("model", "resnet20", width=4), build_scheme(option_config("init", "bn")), 10, 3, 8)
    opt = build_optimizer(net, optim, torch.device("cpu"))
    sched = build_scheduler(opt, SchedConfig(name="cosine", per_step=True, warmup_epochs=1), per_step_epochs, steps)
    return net, opt, sched


def _eager_step(net, opt, criterion, optim, x, y):
    """An eager training step written out by hand (fp32: no GradScaler): forward, loss, backward, clip, step."""
    logits = net(x)
    loss = criterion(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if optim.clip_grad_norm > 0 or optim.agc > 0:
        clip_gradients(net, optim)
    opt.step()
    return loss.detach(), logits.argmax(1).eq(y).sum()


@pytest.mark.parametrize("clip", ["none", "norm", "agc"])
def test_graphed_step_trains_as_the_eager_step_on_cpu(clip):
    """Same weights, BatchNorm statistics, momentum buffers, losses and hits after warm-up steps,
    tensor-lr steps under a per-step schedule that changes the lr every step, and a partial batch."""
    optim = OptimConfig(
        lr=0.2,
        weight_decay=5e-4,
        scalar_lr_mult=0.1,
        clip_grad_norm=0.5 if clip == "norm" else 0.0,
        agc=0.02 if clip == "agc" else 0.0,
    )
    gen = torch.Generator().manual_seed(1)
    sizes = [16] * 6 + [5] + [16] * 3  # a partial batch after the switch to the graph's step
    batches = [(torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)) for n in sizes]
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    amp = dict(device_type="cpu", dtype=torch.float32, enabled=False)

    net_a, opt_a, sched_a = _net_and_opt(optim)
    net_b, opt_b, sched_b = _net_and_opt(optim)
    net_a.train()
    net_b.train()
    step = GraphedStep(StepObjects(net_b, opt_b, criterion, amp, torch.amp.GradScaler("cpu", enabled=False), optim))
    assert not step.capture
    lrs = []
    for x, y in batches:
        expected = _eager_step(net_a, opt_a, criterion, optim, x, y)
        got = step(x, y)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        lrs.append(opt_b.param_groups[0]["lr"])
        sched_a.step()
        sched_b.step()
    assert len(set(lrs)) == len(lrs)  # the lr changed at every step, and the tensors followed
    assert step.eager_steps == 1 and step.lrs and isinstance(opt_b.param_groups[0]["lr"], float)
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights, BN running means/variances and batch counters
    buffers_a = [opt_a.state[p]["momentum_buffer"] for p in net_a.parameters()]
    buffers_b = [opt_b.state[p]["momentum_buffer"] for p in net_b.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(buffers_a, buffers_b, strict=True))


def test_train_with_the_graphed_step_equals_eager_training(make_cfg, tmp_path, monkeypatch):
    """train(cfg) through the graphed step's code (run eagerly on the CPU, the device check lifted)
    gives the eager run's metrics and weights to the bit: BN, a per-step schedule, clipping, mid-epoch logs."""
    common = [
        *TINY,
        "init=bn",
        "sched.per_step=true",
        "sched.warmup_epochs=0.5",
        "optim.clip_grad_norm=1.0",
        "trainer.log_every=3",
    ]
    eager = train(make_cfg(common, tmp_path / "eager"))
    monkeypatch.setattr("nfbench.engine.loop.check_device", lambda device, world_size: None)
    graphed = train(make_cfg([*common, "trainer.cuda_graph=true"], tmp_path / "graphed"))
    for key in ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5"):
        assert graphed[key] == eager[key], key
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["model"]
        for run in ("eager", "graphed")
    ]
    for name, a in weights[0].items():
        assert torch.equal(a, weights[1][name]), name


@pytest.mark.parametrize(
    "override, named",
    [
        ("trainer.precision=fp16", "trainer.precision=fp16"),
        ("trainer.mixup_alpha=0.2", "trainer.mixup_alpha=0.2"),
        ("trainer.cutmix_alpha=1.0", "cutmix_alpha=1.0"),
        ("trainer.compile=true", "trainer.compile=true"),
        ("trainer.devices=2", "trainer.devices=2"),
    ],
)
def test_what_cannot_be_captured_is_refused_in_one_line(make_cfg, override, named):
    cfg = make_cfg([*TINY, "trainer.cuda_graph=true", override])
    with pytest.raises(ConfigError) as e:
        check_values(cfg)
    message = str(e.value)
    assert "\n" not in message and message.startswith("trainer.cuda_graph=true cannot run with") and named in message
    check_values(make_cfg([*TINY, "trainer.cuda_graph=false", override]))  # the option alone is fine


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_graph_on_a_cpu_is_refused_before_any_file(make_cfg, tmp_path):
    """A refusal, not an eager fallback: a run asked to be graphed would be timed as what it is not."""
    run_dir = tmp_path / "run"
    with pytest.raises(
        ConfigError,
        match=r"^trainer.cuda_graph=true needs a CUDA device, and this run trains on "
        r"cpu: set trainer.cuda_graph=false \(or run on a GPU\)$",
    ):
        train(make_cfg([*TINY, "trainer.cuda_graph=true"], run_dir))
    assert not run_dir.exists()


def test_several_processes_are_refused():
    with pytest.raises(ConfigError, match="trainer.cuda_graph=true trains one process, and this run has 2"):
        check_device(torch.device("cuda", 0), world_size=2)


def test_a_resume_may_switch_the_graph_on_or_off(make_cfg):
    """A replay runs the eager step's kernels: switching it changes no trajectory."""
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(make_cfg(TINY), resolve=True)
    new = copy.deepcopy(old)
    new["trainer"]["cuda_graph"] = True
    assert rundir.config_changes(old, new) == {}


# --- On a CUDA device -------------------------------------------------------------------------------


def _cuda_training(graphed: bool, precision: str, steps: int, batches: list, optim: OptimConfig):
    """A ResNet-20 (BatchNorm) trained on ``batches`` cycled for ``steps`` steps, per-step cosine schedule;
    (losses, state_dict, the GraphedStep or None)."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = build_model(
        option_config("model", "resnet20", width=16), build_scheme(option_config("init", "bn")), 10, 3, 32
    )
    net = net.to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(net, optim, device)
    sched = build_scheduler(opt, SchedConfig(name="cosine", per_step=True, warmup_epochs=1), 4, steps // 4)
    criterion = nn.CrossEntropyLoss()
    amp = dict(device_type="cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    objects = StepObjects(net, opt, criterion, amp, torch.amp.GradScaler("cuda", enabled=False), optim)
    step = GraphedStep(objects, channels_last=True) if graphed else None
    net.train()
    losses = []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        if step is not None:
            loss, _ = step(x, y)
        else:
            with torch.autocast(**amp):
                logits = net(x.contiguous(memory_format=torch.channels_last))
                loss = criterion(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if optim.clip_grad_norm > 0:
                clip_gradients(net, optim)
            opt.step()
        losses.append(loss.detach().clone())
        sched.step()
    torch.cuda.synchronize()
    return torch.stack(losses).cpu(), {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, step


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||a||, elementwise differences of near-zero entries weighed by the tensor's scale."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_captured_step_trains_as_the_eager_step_on_cuda(precision, monkeypatch):
    """200 steps, the last batch of each pass partial (an eager step between replays): the losses, weights
    and BatchNorm statistics of graph and eager training agree to float tolerance (deterministic cuDNN,
    so the one difference is the fused SGD kernel reading the lr as float32)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [64] * 9 + [40]
    batches = [
        (
            torch.randn(n, 3, 32, 32, device="cuda", generator=gen),
            torch.randint(0, 10, (n,), device="cuda", generator=gen),
        )
        for n in sizes
    ]
    optim = OptimConfig(lr=0.02, momentum=0.9, weight_decay=5e-4, clip_grad_norm=2.0)
    steps = 200
    eager_losses, eager_state, _ = _cuda_training(False, precision, steps, batches, optim)
    graph_losses, graph_state, step = _cuda_training(True, precision, steps, batches, optim)
    assert step.graph is not None and step.eager_steps == steps // 10
    assert step.replays == steps - steps // 10 - WARMUP_STEPS
    assert torch.isfinite(graph_losses).all()
    loss_diff = (graph_losses - eager_losses).abs()
    state_diff = {k: _relative_difference(v, graph_state[k]) for k, v in eager_state.items() if v.is_floating_point()}
    worst = max(state_diff, key=state_diff.get)
    print(
        f"\n{precision}: max |loss difference| {loss_diff.max():.3g} "
        f"(warm-up steps {loss_diff[:WARMUP_STEPS].max():.3g}, "
        f"last step {loss_diff[-1]:.3g}); largest relative state difference {state_diff[worst]:.3g} ({worst})"
    )
    tol = 1e-3 if precision == "fp32" else 2e-2
    assert loss_diff[:WARMUP_STEPS].max() <= 1e-6 * eager_losses[0]  # the warm-up is eager training
    assert loss_diff.max() <= tol and state_diff[worst] <= tol
    for name, a in eager_state.items():
        if name.endswith("num_batches_tracked"):  # BatchNorm's counter: every step, replayed or eager
            assert int(a) == int(graph_state[name]) == steps, name
    assert any(name.endswith("running_var") for name in state_diff)


@pytest.mark.gpu
@needs_cuda
def test_train_with_cuda_graph_on_cuda_matches_eager(make_cfg, tmp_path):
    """train(cfg) with trainer.cuda_graph=true replays the captured step and ends where eager training does."""
    common = [
        *TINY,
        "init=bn",
        "trainer.device=cuda",
        "trainer.deterministic=true",
        "sched.per_step=true",
        "trainer.precision=bf16",
        "trainer.channels_last=true",
    ]
    eager = train(make_cfg(common, tmp_path / "eager"))
    graphed = train(make_cfg([*common, "trainer.cuda_graph=true"], tmp_path / "graphed"))
    assert graphed["status"] == eager["status"] == "finished"
    for key in ("train_loss", "test_loss"):
        assert graphed[key] == pytest.approx(eager[key], rel=2e-2), key
