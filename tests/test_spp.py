"""nfbench spp (issue 4): the statistics against a direct computation, the output contract, and the
three claims of docs/science.md#spp-claims as numbers.

The claims run on ResNet-50 (and ResNet-101 where depth is the point) at stage-1 width 16 instead
of 64 to stay within CI time; every threshold says which expectation it comes from (the variance
algebra of Civitelli et al. section 3 and appendix A) and what this code measured at width 16 and
at the published width 64, so it is visible that narrowing the network does not change the claim.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.nn import functional as F

from nfbench.analysis.spp import block_stats, measure, run_spp
from nfbench.analysis.spp_plot import plot_dirs
from nfbench.cli.main import CONF_DIR, main
from nfbench.configstore import register_configs
from nfbench.errors import ConfigError
from nfbench.models import build_model
from nfbench.schemes import SCHEMES, build_scheme

# The output contract of the issue, written out rather than imported so that a change to it fails here.
CONTRACT = ["model", "init", "weights", "block", "fwd_var", "bwd_var", "fwd_chan_mean_sq", "fwd_chan_var"]
PAPER_NF_SCHEMES = ["idshort", "learnscalar", "convshort"]
NARROW = 16  # stage-1 width for the claim tests (published: 64)


def compose_cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("config", overrides=[*overrides, "trainer.device=cpu"])


@lru_cache(maxsize=None)
def spp(model: str, init: str, weights: str, width: int = NARROW) -> tuple[dict, ...]:
    """The default SPP (Gaussian batch of 32, random labels, seed 0), measured once per session."""
    return tuple(
        measure(compose_cfg([f"model={model}", f"model.width={width}", f"init={init}", f"init.weights={weights}"]))
    )


def col(rows, key: str) -> list[float]:
    return [r[key] for r in rows]


def spread(values: list[float]) -> float:
    return max(values) / min(values)


def stages(rows) -> list[list[dict]]:
    """Blocks grouped by stage: a stride-2 block opens a new stage."""
    out: list[list[dict]] = []
    for r in rows:
        if not out or r["stride"] > 1:
            out.append([])
        out[-1].append(r)
    return out


def steps_back(rows) -> list[float]:
    """Var[dL/dx_{l-1}] / Var[dL/dx_l]: the factor each block applies to the backward variance."""
    b = col(rows, "bwd_var")
    return [b[i - 1] / b[i] for i in range(1, len(b))]


# --- the statistics themselves ---------------------------------------------------------------


class TinyBlock(nn.Module):
    """x_l = sqrt(1/2) * (subsample(x) + conv(relu(x))), written out for the test."""

    def __init__(self, chans: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chans, chans, 3, stride=stride, padding=1, bias=False)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return math.sqrt(0.5) * (x[:, :, :: self.stride, :: self.stride] + self.conv(torch.relu(x)))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.blocks = nn.ModuleList([TinyBlock(3, 1), TinyBlock(3, 2)])
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(dim=(2, 3)))


def direct_moments(t: torch.Tensor) -> tuple[float, float, float]:
    """Population variance of all elements; mean over channels of (channel mean)^2 and of channel variance."""
    a = t.detach().double().numpy()
    per_channel = [a[:, c] for c in range(a.shape[1])]
    return (
        float(((a - a.mean()) ** 2).mean()),
        float(np.mean([c.mean() ** 2 for c in per_channel])),
        float(np.mean([((c - c.mean()) ** 2).mean() for c in per_channel])),
    )


def test_statistics_match_a_direct_computation():
    """block_stats == numpy moments of the block outputs and of their .grad after a hand-written backward."""
    torch.manual_seed(0)
    net = TinyNet()
    x, y = torch.randn(5, 2, 6, 6), torch.tensor([0, 3, 1, 2, 3])
    stats = block_stats(net, x, y)
    # Measuring must not touch the parameters' gradients (training calls it between steps).
    assert all(p.grad is None for p in net.parameters())

    x1 = net.blocks[0](net.stem(x))
    x2 = net.blocks[1](x1)
    x1.retain_grad()
    x2.retain_grad()
    F.cross_entropy(net.head(x2.mean(dim=(2, 3))), y).backward()
    assert [s.block for s in stats] == [0, 1] and [s.stride for s in stats] == [1, 2]
    for s, out in zip(stats, (x1, x2)):
        var, chan_mean_sq, chan_var = direct_moments(out)
        bwd_var = direct_moments(out.grad)[0]
        assert s.fwd_var == pytest.approx(var, rel=1e-6)
        assert s.fwd_chan_mean_sq == pytest.approx(chan_mean_sq, rel=1e-6)
        assert s.fwd_chan_var == pytest.approx(chan_var, rel=1e-6)
        assert s.bwd_var == pytest.approx(bwd_var, rel=1e-6)
        assert bwd_var > 0


def test_seeds_average_independent_repeats():
    """spp.seeds=2 is the mean (and min-max) of the runs seed=0 and seed=1, repeat k using seed + k."""
    base = ["model=resnet20", "model.width=4", "init=idshort"]
    both = measure(compose_cfg([*base, "spp.seeds=2"]))
    one = [measure(compose_cfg([*base, f"seed={s}"])) for s in (0, 1)]
    assert one[0][0]["fwd_var"] != one[1][0]["fwd_var"]
    for r, a, b in zip(both, *one):
        assert r["seeds"] == 2
        for key in ("fwd_var", "bwd_var", "fwd_chan_mean_sq", "fwd_chan_var"):
            assert r[key] == pytest.approx((a[key] + b[key]) / 2, rel=1e-9)
        assert r["bwd_var_min"] == pytest.approx(min(a["bwd_var"], b["bwd_var"]), rel=1e-9)
        assert r["bwd_var_max"] == pytest.approx(max(a["bwd_var"], b["bwd_var"]), rel=1e-9)


@pytest.mark.parametrize("init", SCHEMES.names())
def test_every_registered_scheme_gives_one_row_per_block(init):
    """Hooks attach to net.blocks, so any scheme works; gradients can be exactly 0 (a zero classifier)."""
    cfg = compose_cfg(["model=resnet20", "model.width=4", f"init={init}"])
    rows = measure(cfg)
    net = build_model(cfg.model, build_scheme(cfg.init), 10, 3, 32)
    assert [r["block"] for r in rows] == list(range(len(net.blocks)))
    assert [r["stride"] for r in rows] == [b.stride for b in net.blocks]
    for r in rows:
        assert r["fwd_var"] > 0 and math.isfinite(r["fwd_var"])
        # Exactly 0 where the classifier starts at 0 (Fixup's rule 1 stops every gradient), positive elsewhere.
        assert math.isfinite(r["bwd_var"]) and (r["bwd_var"] == 0) == (not net.head.fc.weight.any())


def test_real_images_and_their_labels():
    """spp.input=data feeds test images of the configured data set (digits: 1 x 8 x 8, no download)."""
    rows = measure(
        compose_cfg(
            [
                "data=digits",
                "model=resnet20",
                "model.width=4",
                "init=convshort",
                "spp.input=data",
                "spp.labels=data",
                "spp.batch_size=16",
            ]
        )
    )
    assert len(rows) == 9 and all(r["bwd_var"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="spp.batch_size=1000 is larger than the 359 test images"):
        measure(
            compose_cfg(["data=digits", "model=resnet20", "model.width=4", "spp.input=data", "spp.batch_size=1000"])
        )


@pytest.mark.parametrize(
    "override, message",
    [
        ("spp.labels=data", "spp.labels='data' is not allowed: labels=data needs spp.input=data"),
        ("spp.formats=[]", "spp.formats=[] is not allowed: a non-empty list from png, pdf, svg"),
        ("spp.batch_size=0", "spp.batch_size=0 is not allowed: must be >= 1"),
        ("spp.num_classes=1", "spp.num_classes=1 is not allowed: must be >= 2"),
        ("trainer.log_spp_every=-1", "trainer.log_spp_every=-1 is not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_spp(compose_cfg([override, f"trainer.run_dir={tmp_path}"]))


@pytest.mark.parametrize(
    "override, key, members",
    [
        ("spp.input=noise", "spp.input", "gaussian, data"),
        ("spp.labels=none", "spp.labels", "random, data"),
        ("spp.formats=[jpg]", "spp.formats[0]", "png, pdf, svg"),
    ],
)
def test_values_outside_the_closed_sets_are_refused_by_hydra(override, key, members):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg([override])
    assert f"expected one of [{members}]" in str(e.value.__cause__) and f"full_key: {key}" in str(e.value.__cause__)


# --- output contract -----------------------------------------------------------------------------


def test_run_writes_the_csv_contract_and_the_figures(tmp_path):
    cfg = compose_cfg(
        [
            "model=resnet20",
            "model.width=4",
            "init=learnscalar",
            "spp.seeds=2",
            "spp.formats=[png,pdf,svg]",
            f"trainer.run_dir={tmp_path}",
        ]
    )
    out = run_spp(cfg)
    with open(tmp_path / "spp.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[: len(CONTRACT)] == CONTRACT
        rows = list(reader)
    assert [int(r["block"]) for r in rows] == list(range(9))  # resnet20: 3 stages of 3 blocks
    assert {(r["model"], r["init"], r["weights"]) for r in rows} == {("resnet20", "learnscalar", "he_fanout")}
    assert all(float(r["fwd_var"]) > 0 and float(r["bwd_var"]) > 0 for r in rows)
    assert (tmp_path / "spp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "spp.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "spp.svg").read_bytes()[:2000]
    assert out == {
        "csv": str(tmp_path / "spp.csv"),
        "figures": [str(tmp_path / f"spp.{e}") for e in ("png", "pdf", "svg")],
    }


def test_multirun_overlays_the_sweep_and_spp_plot_combines_folders(tmp_path):
    """`nfbench spp -m` leaves one spp.csv per job and one overlay per model in the sweep directory;
    `nfbench spp-plot` draws the same from any folders."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "nfbench.cli",
        "spp",
        "-m",
        "model=resnet20",
        "model.width=4",
        "init=idshort,bn",
        "trainer.device=cpu",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(sweep.glob("*/spp.csv"))) == 2
    assert [p.name for p in sweep.glob("spp_*.png")] == ["spp_resnet20.png"]

    # A second model in another folder: spp-plot draws one figure per model found under all the folders.
    run_spp(compose_cfg(["model=resnet32", "model.width=4", f"trainer.run_dir={tmp_path / 'other' / 'job'}"]))
    main(["spp-plot", str(sweep), str(tmp_path / "other"), "--out", str(tmp_path / "figs"), "--formats", "svg"])
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["spp_resnet20.svg", "spp_resnet32.svg"]
    with pytest.raises(FileNotFoundError, match="no spp.csv"):
        plot_dirs([tmp_path / "figs"], tmp_path)


# --- docs/science.md#spp-claim-1: plain + He loses the signal, BatchNorm keeps it ---------------------


def test_claim1_plain_he_loses_the_forward_signal_bn_keeps_it():
    """x_l = x + f(x) with He fan-in doubles Var[x] per block: 2^15 ~ 3e4 over ResNet-50's 16 blocks
    (measured max/min: 1.3e4 at width 16, 1.2e4-1.5e4 at 64), so > 1e3 leaves a 10x margin.  With
    BatchNorm each branch adds ~1 and a stride-2 block restarts from ~2, so Var[x] stays <= 7 in the
    6-block stage (measured max/min 3.5 at both widths): < 10."""
    plain, bn = spp("resnet50", "plain", "he_fanin"), spp("resnet50", "bn", "he_fanin")
    assert spread(col(plain, "fwd_var")) > 1e3
    assert spread(col(bn, "fwd_var")) < 10


def test_claim1_backward_plain_explodes_bn_grows_polynomially():
    """Backward, plain doubles per block going back, divided by 4 at each of the 3 stride-2 blocks
    (claim 3): 2^32 / 4^3 ~ 7e7 over ResNet-101 (measured 1.8e8), threshold 1e6.  BatchNorm divides
    the branch's contribution by Var[x_l] ~ l (1 + 1/l per block: polynomial; measured 9.6e3),
    threshold 1e5.  On ResNet-50 the two are not yet apart (measured 1.7e3 vs 3.7e2-4.0e2: BN's
    backward variance also grows 20x across its 6-block stage), which is why this half of the claim
    is checked on ResNet-101: the paper's "trends are more conspicuous in deeper networks"."""
    plain, bn = spp("resnet101", "plain", "he_fanin"), spp("resnet101", "bn", "he_fanin")
    assert spread(col(plain, "bwd_var")) > 1e6
    assert spread(col(bn, "bwd_var")) < 1e5
    # Exponential vs polynomial: plain's step per block stays ~2 to the end of the 23-block stage,
    # BN's decays towards 1 (1 + c/l).  The last five steps: plain > 1.5 (measured 1.74-2.0 at width
    # 16, 1.86-1.91 at 64), BN < 1.3 (measured 1.13-1.16 at both widths).
    assert min(steps_back(stages(plain)[2][-6:])) > 1.5
    assert max(steps_back(stages(bn)[2][-6:])) < 1.3


# --- claim 2: Brock's initialisation keeps the forward signal but explodes the gradients ------------


@pytest.mark.parametrize("init", PAPER_NF_SCHEMES)
def test_claim2_brock_weights_explode_the_backward_variance(init):
    """Brock's gamma^2 = 2/(1 - 1/pi) ~ 2.93 gives each conv a backward factor gamma^2/2 ~ 1.47, so a
    3-conv branch 1.47^3 ~ 3.2 and a block 0.5 (1 + 3.2) ~ 2.1 (idshort; convshort's 1x1 shortcut
    adds 1.47 for ~2.3): the gradient doubles per block going back (docs/science.md#spp-claims: "doubling per
    block").
    Median step in the 6-block stage: within [1.6, 2.8] (measured 1.9-2.2 at widths 16 and 64).
    Deepest to shallowest block of ResNet-50: >= 1e3, "orders of magnitude" (measured 3.3e3 idshort
    at widths 16 and 64, 1.3e4-1.4e4 convshort; the independent implementation
    (docs/science.md#spp-independent): 9.5e-7 / 2.8e-10 = 3.4e3).  Forward, per channel: Var stays within 4x
    over the network (measured max/min 1.5-1.6; plain's is > 1e3)."""
    rows = spp("resnet50", init, "brock")
    b = col(rows, "bwd_var")
    assert b[0] / b[-1] >= 1e3
    assert 1.6 <= statistics.median(steps_back(stages(rows)[2])) <= 2.8
    assert spread(col(rows, "fwd_chan_var")) < 4 and spread(col(rows, "fwd_var")) < 4


def test_claim2_worse_with_depth():
    """ResNet-101 has 17 more blocks in stage 3 than ResNet-50, each doubling the gradient: 2^17 ~ 1.3e5
    more (measured 7.6e4); threshold 1e3."""
    ratio = {m: col(spp(m, "idshort", "brock"), "bwd_var") for m in ("resnet50", "resnet101")}
    assert ratio["resnet101"][0] / ratio["resnet101"][-1] >= 1e3 * ratio["resnet50"][0] / ratio["resnet50"][-1]


# --- claim 3: the paper's schemes with he_fanout keep the backward variance --------------------------


@pytest.mark.parametrize("init", PAPER_NF_SCHEMES)
def test_claim3_he_fanout_keeps_the_backward_variance(init):
    """With rule (2) every branch and c = sqrt(1/2) give a backward factor of exactly 1 per block
    (Civitelli et al. section 3.3).  Median step in the 6-block stage within [0.8, 1.25] (measured
    0.96-0.97 at width 16, 0.94 at 64; Brock's weights: 1.9-2.2), and max/min within every stage
    <= 2 (measured <= 1.46 and <= 1.40; Brock's: 26-48 over the same stage).  A stride-2 block
    sends each gradient to 4x more input positions, a per-element factor of 1/4: the step there
    must lie in [3, 6] (measured 4.0-4.8 and 4.0-4.4).  Removing that resolution effect (x 4 per
    stride-2 block), the whole network stays within 8x (theory 1; measured 2.6-3.1, the slow drift
    of ~0.96 per block and steps slightly above 4), against >= 1e4 for the same block with Brock's
    weights (measured 2e5-9e5)."""
    rows = spp("resnet50", init, "he_fanout")
    assert 0.8 <= statistics.median(steps_back(stages(rows)[2])) <= 1.25
    for stage in stages(rows):
        assert spread(col(stage, "bwd_var")) <= 2
    for prev, first in zip(stages(rows), stages(rows)[1:]):
        assert 3 <= first[0]["bwd_var"] / prev[-1]["bwd_var"] <= 6

    def per_resolution(rs) -> list[float]:
        shrink = np.cumprod([r["stride"] ** 2 for r in rs])
        return [r["bwd_var"] / s for r, s in zip(rs, shrink)]

    assert spread(per_resolution(rows)) <= 8
    assert spread(per_resolution(spp("resnet50", init, "brock"))) >= 1e4


@pytest.mark.slow
def test_published_width_matches_the_independent_implementation():
    """docs/science.md#spp-independent: ResNet-50 at batch 32, idshort + he_fanout 2.4e-12 ... 2.8e-10 and idshort +
    brock 9.5e-7 ... 2.8e-10 (shallowest ... deepest).  Within 2x: one seed of a 32-sample batch
    (measured 1.8e-12 ... 2.8e-10 and 9.0e-7 ... 2.8e-10)."""
    for weights, (first, last) in {"he_fanout": (2.4e-12, 2.8e-10), "brock": (9.5e-7, 2.8e-10)}.items():
        b = col(spp("resnet50", "idshort", weights, width=64), "bwd_var")
        assert first / 2 <= b[0] <= first * 2, (weights, b[0])
        assert last / 2 <= b[-1] <= last * 2, (weights, b[-1])


MEMORY_PROBE = """
import json, resource, torch
torch.set_num_threads(2)
from hydra import compose, initialize_config_dir
from nfbench.cli.main import CONF_DIR
from nfbench.configstore import register_configs
from nfbench.analysis.spp import measure
register_configs()
with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
    cfg = compose("config", overrides=["model=resnet101", "init=convshort", "spp.batch_size=32", "trainer.device=cpu"])
rows = measure(cfg)
print(json.dumps({"blocks": len(rows), "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


@pytest.mark.slow
def test_resnet101_batch32_fits_in_a_few_gib_on_two_cores():
    """Full-width ResNet-101 with ConvShort (the largest of the paper's blocks: 74.8 M parameters),
    batch 32 at 32 x 32, 2 threads: peak resident memory of the whole process, Python and torch
    included.  Measured 2.3 GiB; required < 4 GiB ("a few GiB")."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"ResNet-101 convshort, batch 32, 2 threads: peak RSS {result['peak_gib']:.2f} GiB")
    assert result["blocks"] == 33
    assert result["peak_gib"] < 4.0


# --- during training ---------------------------------------------------------------------------


def test_training_logs_spp_without_changing_the_run(make_cfg, tmp_path):
    """trainer.log_spp_every=1 writes spp_<stat>/block_NN scalars at every epoch start, and the run's
    weights (BatchNorm running statistics included) are bit-identical to a run without it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nfbench.engine.loop import train
    from tests.conftest import TINY

    common = [*TINY, "init=bn", "trainer.deterministic=true"]
    train(make_cfg([*common, "trainer.log_spp_every=1"], tmp_path / "spp"))
    train(make_cfg(common, tmp_path / "plain"))
    with_spp, without = (
        torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)["model"] for d in ("spp", "plain")
    )
    assert with_spp.keys() == without.keys()
    for k in with_spp:
        assert torch.equal(with_spp[k], without[k]), k

    events = EventAccumulator(str(tmp_path / "spp" / "tb")).Reload()
    tags = events.Tags()["scalars"]
    for stat in ("fwd_var", "bwd_var", "fwd_chan_mean_sq", "fwd_chan_var"):
        assert {f"spp_{stat}/block_{i:02d}" for i in range(9)} <= set(tags)
    steps = [e.step for e in events.Scalars("spp_bwd_var/block_00")]
    assert steps == [0, 256 // 32]  # epoch starts: 256 training images in batches of 32
    assert all(e.value > 0 for e in events.Scalars("spp_bwd_var/block_08"))
