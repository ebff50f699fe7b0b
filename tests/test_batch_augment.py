"""nfbench.data.augment against torchvision, image by image, bit for bit, on real CIFAR-10 images.

The reference of each op is ``torchvision.transforms.v2.functional`` called on one image with the
arguments ``v2.RandAugment`` passes it, at the magnitude torchvision's own table gives (read from
``v2.RandAugment._AUGMENTATION_SPACE``: private, so only here, to check ours against it).
"""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import PurePath

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from nfbench.data.augment import OPS, SIGNED, BatchRandAugment, magnitudes
from tests.conftest import SHARED_DATA

NEAREST = v2.InterpolationMode.NEAREST
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cifar() -> torch.Tensor:
    """70 real CIFAR-10 test images, 7 per class, decoded as ImageFolder decodes them: uint8 (70, 3, 32, 32).
    Read straight from the shared tarball (its test split comes first), nothing extracted."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_DATA}")
    taken: dict[str, list[torch.Tensor]] = {}
    with tarfile.open(SHARED_DATA, "r:gz") as tar:
        for member in tar:
            parts = PurePath(member.name).parts
            if not member.isfile() or parts[-3] != "test" or len(taken.setdefault(parts[-2], [])) == 7:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                taken[parts[-2]].append(torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1))
            if len(taken) == 10 and all(len(v) == 7 for v in taken.values()):
                break
    return torch.stack([img for cls in sorted(taken) for img in taken[cls]])


def tv_magnitude(op: str, bin_: int, height: int, width: int, negated: bool, bins: int = 31) -> float:
    """The magnitude v2.RandAugment.forward passes for ``op`` at ``bin_``, negated as it negates."""
    table, signed = v2.RandAugment._AUGMENTATION_SPACE[op]
    values = table(bins, height, width)
    if values is None:
        return 0.0
    m = float(values[bin_])
    return -m if signed and negated else m


def reference(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """torchvision's op on one image with the arguments v2.RandAugment passes (fill=None)."""
    if op == "Identity":
        return img
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(m))
        return F.affine(
            img,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            interpolation=NEAREST,
            fill=None,
            shear=[shear, 0.0] if op == "ShearX" else [0.0, shear],
            center=[0, 0],
        )
    if op in ("TranslateX", "TranslateY"):
        return F.affine(
            img,
            angle=0.0,
            translate=[int(m), 0] if op == "TranslateX" else [0, int(m)],
            scale=1.0,
            interpolation=NEAREST,
            shear=[0.0, 0.0],
            fill=None,
        )
    if op == "Rotate":
        return F.rotate(img, angle=m, interpolation=NEAREST, fill=None)
    adjust = {
        "Brightness": F.adjust_brightness,
        "Color": F.adjust_saturation,
        "Contrast": F.adjust_contrast,
        "Sharpness": F.adjust_sharpness,
    }
    if op in adjust:
        return adjust[op](img, 1.0 + m)
    if op == "Posterize":
        return F.posterize(img, bits=int(m))
    if op == "Solarize":
        return F.solarize(img, threshold=255 * m)  # 255: the uint8 bound v2.RandAugment multiplies by
    return {"AutoContrast": F.autocontrast, "Equalize": F.equalize}[op](img)


def references(x: torch.Tensor, ops: torch.Tensor, signs: torch.Tensor, magnitude: int) -> torch.Tensor:
    """Each image alone through its drawn layers, torchvision op by op."""
    h, w = x.shape[-2:]
    out = []
    for img, img_ops, img_signs in zip(x, ops.tolist(), signs.tolist(), strict=True):
        for op, sign in zip(img_ops, img_signs, strict=True):
            img = reference(img, OPS[op], tv_magnitude(OPS[op], magnitude, h, w, negated=sign < 0))
        out.append(img)
    return torch.stack(out)


def assert_same_images(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype == torch.uint8 and got.shape == want.shape, what
    wrong = [i for i in range(len(got)) if not torch.equal(got[i], want[i])]
    if wrong:
        i = wrong[0]
        diff = (got[i].int() - want[i].int()).abs()
        pytest.fail(
            f"{what}: {len(wrong)} of {len(got)} images differ; image {i}: {int((diff > 0).sum())} "
            f"pixels, by up to {int(diff.max())}"
        )


def one_op(op: str, negated: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw tensors giving every sample ``op`` in one layer, sample i negated where negated[i]."""
    n = len(negated)
    return torch.full((n, 1), OPS.index(op)), torch.tensor([[-1 if neg else 1] for neg in negated])


# -- magnitudes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [31, 11, 10, 5])
@pytest.mark.parametrize("size", [(32, 32), (28, 20), (224, 224)])
def test_magnitude_tables_are_torchvisions(bins, size):
    h, w = size
    for op in OPS:
        want = v2.RandAugment._AUGMENTATION_SPACE[op][0](bins, h, w)
        got = magnitudes(op, bins, h, w)
        assert (got is None) == (want is None), op
        if got is not None:
            assert got == [float(v) for v in want], op
    assert SIGNED == {op for op, (_, signed) in v2.RandAugment._AUGMENTATION_SPACE.items() if signed}
    assert OPS == tuple(v2.RandAugment._AUGMENTATION_SPACE)  # our op index is the index v2 draws


# -- each op, per image, bit for bit -----------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_each_op_at_every_bin_and_sign_equals_torchvision(op, cifar):
    """Every one of the 31 bins, both signs, on 8 images in one batch (signs alternating), then bin 9
    on all 70 images with random signs."""
    x = cifar[::9][:8].repeat_interleave(2, dim=0)
    negated = [bool(i % 2) for i in range(len(x))]
    for bin_ in range(31):
        got = BatchRandAugment(1, bin_, (32, 32))(x, *one_op(op, negated))
        want = torch.stack([reference(img, op, tv_magnitude(op, bin_, 32, 32, neg)) for img, neg in zip(x, negated)])
        assert_same_images(got, want, f"{op} at bin {bin_}")
    negated = (torch.rand(len(cifar), generator=torch.Generator().manual_seed(0)) < 0.5).tolist()
    got = BatchRandAugment(1, 9, (32, 32))(cifar, *one_op(op, negated))
    want = torch.stack([reference(img, op, tv_magnitude(op, 9, 32, 32, neg)) for img, neg in zip(cifar, negated)])
    assert_same_images(got, want, f"{op} at bin 9, all images")


@pytest.mark.parametrize("num_ops, magnitude", [(2, 9), (2, 0), (2, 30), (1, 15), (3, 5), (2, 21)])
def test_a_batch_of_mixed_draws_equals_each_image_alone(num_ops, magnitude, cifar):
    """Samples with different ops and signs in one batch: each gets its own, as torchvision gives it."""
    ra = BatchRandAugment(num_ops, magnitude, (32, 32))
    ops, signs = ra.draw(len(cifar), torch.Generator().manual_seed(100 * num_ops + magnitude))
    assert len(ops.unique()) >= 12 and (signs < 0).any() and (signs > 0).any()  # a mixed batch
    assert_same_images(
        ra(cifar, ops, signs), references(cifar, ops, signs, magnitude), f"num_ops={num_ops} magnitude={magnitude}"
    )


@pytest.mark.parametrize("size", [(28, 20), (17, 32)], ids=["28x20", "17x32"])
def test_non_square_and_odd_sizes_equal_torchvision(size, cifar):
    """The pixel maps' centre and normalisation and Translate's magnitudes depend on height and width."""
    h, w = size
    x = cifar[:, :, :h, :w].contiguous()
    for magnitude in (9, 30):
        ra = BatchRandAugment(2, magnitude, size)
        ops, signs = ra.draw(len(x), torch.Generator().manual_seed(magnitude))
        assert_same_images(ra(x, ops, signs), references(x, ops, signs, magnitude), f"{size} at {magnitude}")


def test_one_channel_images_equal_torchvision(cifar):
    """Grey images: Color leaves them as they are, Contrast averages the channel itself."""
    x = F.rgb_to_grayscale(cifar)
    for magnitude in (9, 30):
        ra = BatchRandAugment(2, magnitude, (32, 32))
        ops, signs = ra.draw(len(x), torch.Generator().manual_seed(magnitude))
        assert_same_images(ra(x, ops, signs), references(x, ops, signs, magnitude), f"grey at {magnitude}")
    for op in OPS:
        assert_same_images(
            BatchRandAugment(1, 30, (32, 32))(x[:8], *one_op(op, [False, True] * 4)),
            torch.stack([reference(img, op, tv_magnitude(op, 30, 32, 32, i % 2 == 1)) for i, img in enumerate(x[:8])]),
            f"grey {op}",
        )


@pytest.mark.parametrize("magnitude", [9, 30])
def test_equals_v2_randaugment_itself(magnitude, cifar):
    """Through v2.RandAugment's public interface: with torch's RNG seeded alike, replaying the draws
    its forward makes (an op index, then rand() <= 0.5 for a signed op) gives its output exactly."""
    t = v2.RandAugment(num_ops=2, magnitude=magnitude)
    ops, signs, want = [], [], []
    with torch.random.fork_rng():
        for i, img in enumerate(cifar):
            torch.manual_seed(i)
            want.append(t(img))
            torch.manual_seed(i)
            ops.append([])
            signs.append([])
            for _ in range(2):
                op = int(torch.randint(len(OPS), ()))
                ops[-1].append(op)
                signs[-1].append(-1 if OPS[op] in SIGNED and torch.rand(()) <= 0.5 else 1)
    got = BatchRandAugment(2, magnitude, (32, 32))(cifar, torch.tensor(ops), torch.tensor(signs))
    assert_same_images(got, torch.stack(want), f"v2.RandAugment(num_ops=2, magnitude={magnitude})")


# -- the ops' edge cases ---------------------------------------------------------------------------------


def ramp() -> torch.Tensor:
    """Every uint8 value once per channel, channels shifted: (1, 3, 16, 16)."""
    values = torch.arange(256, dtype=torch.uint8)
    return torch.stack([values, values.roll(85), values.roll(170)]).view(1, 3, 16, 16)


def test_solarize_inverts_from_the_threshold_as_torchvision_compares_it():
    """255 * m is compared with the pixels in float32: at bin 6, 255 * float32(0.8) = 204.000003 rounds to
    204, so pixel 204 is inverted. Bin 0 inverts only 255; bin 30 inverts every pixel."""
    x = ramp()
    for bin_ in range(31):
        got = BatchRandAugment(1, bin_, (16, 16))(x, *one_op("Solarize", [False]))
        assert_same_images(
            got, F.solarize(x, threshold=255 * tv_magnitude("Solarize", bin_, 16, 16, False)), f"Solarize at bin {bin_}"
        )
    at = {b: BatchRandAugment(1, b, (16, 16))(x, *one_op("Solarize", [False]))[0, 0].flatten() for b in (0, 6, 30)}
    assert at[6][204] == 255 - 204 and at[6][203] == 203
    assert torch.equal(at[0][:255], x[0, 0].flatten()[:255]) and at[0][255] == 0
    assert torch.equal(at[30], 255 - x[0, 0].flatten())


def test_posterize_keeps_the_top_bits_and_eight_bits_are_the_identity():
    x = ramp()
    for bin_ in range(31):
        bits = int(tv_magnitude("Posterize", bin_, 16, 16, False))
        got = BatchRandAugment(1, bin_, (16, 16))(x, *one_op("Posterize", [False]))
        assert_same_images(got, F.posterize(x, bits=bits), f"Posterize at bin {bin_} ({bits} bits)")
        if bits == 8:
            assert torch.equal(got, x)
        assert len(got.unique()) == 2**bits


def test_equalize_and_autocontrast_leave_flat_channels_and_constant_images():
    """Equalize leaves a channel whose pixels below its brightest value number under 255 (a flat one
    among them); AutoContrast leaves a flat channel; the other channels of the same image do change."""
    x = torch.randint(40, 200, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[0] = 77  # a constant image
    x[1, 1] = 13  # one flat channel
    x[2, 2] = 255  # one flat channel at the top value
    x[3, 0] = 90
    x[3, 0, 0, :254] = 10  # 254 pixels below the brightest value: Equalize's step is 0
    x[4, 0] = 90
    x[4, 0, 0, 0] = 250  # flat but for one pixel: 1,023 below the brightest value, step 4
    for op in ("Equalize", "AutoContrast"):
        got = BatchRandAugment(1, 0, (32, 32))(x, *one_op(op, [False] * 5))
        assert_same_images(got, torch.stack([reference(img, op, 0.0) for img in x]), op)
        assert torch.equal(got[0], x[0]) and torch.equal(got[1, 1], x[1, 1]) and torch.equal(got[2, 2], x[2, 2])
        assert not torch.equal(got[1, 0], x[1, 0]) and not torch.equal(got[4, 0], x[4, 0])
    assert torch.equal(BatchRandAugment(1, 0, (32, 32))(x, *one_op("Equalize", [False] * 5))[3, 0], x[3, 0])


def test_contrast_color_and_brightness_of_constant_images():
    """A constant image blended with its own mean: the fused multiply-add decides the last bit, at every bin."""
    x = torch.arange(0, 256, 5, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    for op in ("Contrast", "Color", "Brightness"):
        for bin_ in range(31):
            negated = [i % 2 == 1 for i in range(len(x))]
            got = BatchRandAugment(1, bin_, (8, 8))(x, *one_op(op, negated))
            want = torch.stack([reference(img, op, tv_magnitude(op, bin_, 8, 8, neg)) for img, neg in zip(x, negated)])
            assert_same_images(got, want, f"{op} of constant images at bin {bin_}")


def test_sharpness_leaves_the_border_and_blends_the_interior(cifar):
    x = cifar[:8]
    for bin_ in (1, 15, 30):
        negated = [i % 2 == 1 for i in range(len(x))]
        got = BatchRandAugment(1, bin_, (32, 32))(x, *one_op("Sharpness", negated))
        want = torch.stack(
            [reference(img, "Sharpness", tv_magnitude("Sharpness", bin_, 32, 32, neg)) for img, neg in zip(x, negated)]
        )
        assert_same_images(got, want, f"Sharpness at bin {bin_}")
        border = torch.ones(32, 32, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        assert torch.equal(got[..., border], x[..., border])
        assert not torch.equal(got[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"])
def test_geometric_ops_fill_with_zero(op, cifar):
    """A white image shows the fill: zeros where the source pixel falls outside, at the top bin both ways."""
    x = torch.cat([torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), cifar[:2] | 1])  # no zero pixel of its own
    negated = [False, True, False, True]
    got = BatchRandAugment(1, 30, (32, 32))(x, *one_op(op, negated))
    want = torch.stack([reference(img, op, tv_magnitude(op, 30, 32, 32, neg)) for img, neg in zip(x, negated)])
    assert_same_images(got, want, f"{op} fill")
    filled = (got == 0).all(dim=1).flatten(1)
    assert filled.any(dim=1).all() and not filled.all(dim=1).any()


def test_unsigned_ops_ignore_the_sign_and_bin_0_of_signed_ops_is_the_identity(cifar):
    x = cifar[:4]
    for op in OPS:
        plus = BatchRandAugment(1, 0, (32, 32))(x, *one_op(op, [False] * 4))
        minus = BatchRandAugment(1, 0, (32, 32))(x, *one_op(op, [True] * 4))
        assert torch.equal(plus, minus), op
        if op in SIGNED:
            assert torch.equal(plus, x), op


def test_the_fused_add_rounds_alike_whatever_the_layout():
    """Color, Contrast and Sharpness call torchvision's add_(other, alpha) on other shapes than it does
    (a batch; a contiguous interior). That is exact only if every element gets the same fused
    multiply-add: on a strided row of 30, a long contiguous run, and one element alone."""
    rng = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (64, 32), generator=rng).float()
    b = torch.randint(-255, 256, (64, 32), generator=rng).float()
    for alpha in (-0.27000001072883606, 0.6299999952316284, 1.899999976158142):
        strided = a.clone()
        strided[:, 1:-1].add_(b[:, 1:-1], alpha=alpha)
        contiguous = torch.add(a[:, 1:-1].contiguous().flatten(), b[:, 1:-1].contiguous().flatten(), alpha=alpha)
        alone = torch.stack(
            [torch.add(a[i, j : j + 1], b[i, j : j + 1], alpha=alpha)[0] for i in range(64) for j in range(1, 31)]
        )
        assert torch.equal(strided[:, 1:-1].flatten(), contiguous) and torch.equal(contiguous, alone)


# -- the draws -------------------------------------------------------------------------------------------


def key_counts(ops: torch.Tensor, signs: torch.Tensor) -> np.ndarray:
    """Counts of each (op, sign) v2.RandAugment can apply: 2 per signed op, 1 per unsigned one."""
    keys = [(op, s) for op in range(len(OPS)) for s in ((1, -1) if OPS[op] in SIGNED else (1,))]
    pairs = list(zip(ops.flatten().tolist(), signs.flatten().tolist()))
    return np.array([sum(1 for p in pairs if p == k) for k in keys])


def key_probabilities() -> np.ndarray:
    return np.array([p for op in OPS for p in ((0.5 / 14, 0.5 / 14) if op in SIGNED else (1 / 14,))])


def test_drawn_ops_and_signs_follow_v2_randaugments_distribution():
    """10,000 samples x 2 layers: ops uniform (chi-square), signed ops negated half the time, the layers
    and samples independent of each other, unsigned ops never negated. Fixed seed: deterministic."""
    ra = BatchRandAugment(2, 9, (32, 32))
    ops, signs = ra.draw(10_000, torch.Generator().manual_seed(0))
    assert ops.shape == signs.shape == (10_000, 2) and ops.dtype == signs.dtype == torch.int64
    for layer in range(2):
        assert stats.chisquare(torch.bincount(ops[:, layer], minlength=14).numpy()).pvalue > 0.01
        signed = torch.tensor([OPS[o] in SIGNED for o in ops[:, layer].tolist()])
        assert (signs[~signed, layer] == 1).all()
        assert stats.binomtest(int((signs[signed, layer] < 0).sum()), int(signed.sum())).pvalue > 0.01
    table = np.histogram2d(ops[:, 0].numpy(), ops[:, 1].numpy(), bins=14)[0]
    assert stats.chi2_contingency(table).pvalue > 0.01  # layer 2's op does not depend on layer 1's
    counts = key_counts(ops, signs)
    assert stats.chisquare(counts, key_probabilities() * counts.sum()).pvalue > 0.01


def test_draw_frequencies_match_v2_randaugment_observed_on_a_probe(cifar):
    """v2.RandAugment(num_ops=1) applied 10,000 times to one image; each output is identified as one of
    the 23 (op, sign) results (all distinct on this probe); the frequency table matches ours (chi-square
    homogeneity) and both match the uniform distribution v2.RandAugment uses."""
    probe = cifar[3]
    keys = [(op, s) for op in range(len(OPS)) for s in ((1, -1) if OPS[op] in SIGNED else (1,))]
    outcomes = torch.stack([reference(probe, OPS[op], tv_magnitude(OPS[op], 9, 32, 32, s < 0)) for op, s in keys])
    assert len(outcomes.flatten(1).unique(dim=0)) == len(keys)
    t = v2.RandAugment(num_ops=1, magnitude=9)
    observed = np.zeros(len(keys), dtype=np.int64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(10_000):
            match = (outcomes == t(probe)).flatten(1).all(dim=1)
            assert match.sum() == 1
            observed[int(match.int().argmax())] += 1
    ops, signs = BatchRandAugment(1, 9, (32, 32)).draw(10_000, torch.Generator().manual_seed(1))
    ours = key_counts(ops, signs)
    assert observed.sum() == ours.sum() == 10_000
    assert stats.chi2_contingency(np.stack([observed, ours])).pvalue > 0.01
    for counts in (observed, ours):
        assert stats.chisquare(counts, key_probabilities() * 10_000).pvalue > 0.01


def test_draw_repeats_with_the_generator():
    ra = BatchRandAugment(2, 9, (32, 32))
    a, b = ra.draw(64, torch.Generator().manual_seed(5)), ra.draw(64, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- fit for a CUDA graph ----------------------------------------------------------------------------------

SYNCS = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::is_nonzero",
    "aten::equal",
    "aten::allclose",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::bincount",
    "aten::histc",
    "aten::unique_dim",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
}


class OpTrace(TorchDispatchMode):
    """Records every aten op run under it, with its output shapes; fails on an op that reads tensor values
    back to the host or whose output shape depends on them (a boolean index among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        assert name not in SYNCS, f"{name} reads tensor values on the host or has a data-dependent shape"
        if name.startswith("aten::index"):  # (self, indices, ...): a boolean index selects a data-dependent count
            assert not any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in tree_flatten(args[1])[0]), (
                f"{name} with a boolean index has a data-dependent shape"
            )
        out = func(*args, **(kwargs or {}))
        self.calls.append((name, tuple(tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))))
        return out


def test_apply_makes_no_host_round_trip_and_runs_the_same_ops_whatever_the_draws(cifar):
    """Under a dispatch mode that refuses host reads and data-dependent shapes, three very different
    draws (all Identity, all Equalize, random) run the same aten ops on the same shapes: no Python
    branch depends on the data, and the output shape is fixed by the input's."""
    ra = BatchRandAugment(2, 9, (32, 32))
    ra(cifar[:2], *ra.draw(2, torch.Generator()))  # first call: nothing is built lazily inside the traces
    n = len(cifar)
    draws = [
        (torch.zeros(n, 2, dtype=torch.int64), torch.ones(n, 2, dtype=torch.int64)),
        (torch.full((n, 2), OPS.index("Equalize")), -torch.ones(n, 2, dtype=torch.int64)),
        ra.draw(n, torch.Generator().manual_seed(0)),
    ]
    traces = []
    for ops, signs in draws:
        with OpTrace() as trace:
            out = ra(cifar, ops, signs)
        assert out.shape == cifar.shape and out.dtype == torch.uint8
        traces.append(trace.calls)
    assert traces[0] == traces[1] == traces[2] and len(traces[0]) > 50
    with OpTrace() as trace:
        ops, signs = ra.draw(n, torch.Generator().manual_seed(1))
    assert ops.shape == signs.shape == (n, 2)


def test_errors_say_what_was_expected(cifar):
    ra = BatchRandAugment(2, 9, (32, 32))
    ops, signs = ra.draw(len(cifar), torch.Generator())
    with pytest.raises(ValueError, match=r"built for \(32, 32\)"):
        ra(cifar[..., :28, :28], ops, signs)
    with pytest.raises(ValueError, match="uint8"):
        ra(cifar.float(), ops, signs)
    with pytest.raises(ValueError, match="ops and signs"):
        ra(cifar[:5], ops, signs)
    with pytest.raises(ValueError, match="magnitude must be a bin in 0..30"):
        BatchRandAugment(2, 31, (32, 32))


# -- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("magnitude", [9, 30])
def test_cuda_equals_torchvision_on_cuda_per_image(magnitude, cifar):
    x = cifar.cuda()
    ra = BatchRandAugment(2, magnitude, (32, 32))
    ops, signs = ra.draw(len(x), torch.Generator("cuda").manual_seed(magnitude))
    assert_same_images(
        ra(x, ops, signs).cpu(), references(x, ops, signs, magnitude).cpu(), f"CUDA magnitude={magnitude}"
    )
    for op in OPS:  # each op alone, both signs
        negated = [i % 2 == 1 for i in range(len(x))]
        o, s = one_op(op, negated)
        want = torch.stack(
            [reference(img, op, tv_magnitude(op, magnitude, 32, 32, neg)) for img, neg in zip(x, negated)]
        )
        assert_same_images(ra(x, o.cuda(), s.cuda()).cpu(), want.cpu(), f"CUDA {op} at {magnitude}")


@pytest.mark.gpu
@needs_cuda
def test_captured_in_a_cuda_graph_it_replays_new_draws_without_a_sync(cifar):
    """The apply captured once; replays with new images and new draws copied into its inputs give the
    eager results, which are torchvision's, and make no host sync."""
    ra = BatchRandAugment(2, 9, (32, 32))
    gen = torch.Generator("cuda").manual_seed(0)
    x = cifar.cuda()
    static = [x.clone(), *ra.draw(len(x), gen)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up, PyTorch's recipe: the tables are built here, outside the capture
            ra(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = ra(*static)
    replays = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images in (x, x.flip(0)):
            for held, new in zip(static, (images, *ra.draw(len(x), gen)), strict=True):
                held.copy_(new)
            graph.replay()
            replays.append([t.clone() for t in (*static, static_out)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not torch.equal(replays[0][1], replays[1][1])  # each replay had its own draws
    for images, ops, signs, out in replays:
        assert torch.equal(out, ra(images, ops, signs))
        assert_same_images(out.cpu(), references(images, ops, signs, 9).cpu(), "graph replay")
