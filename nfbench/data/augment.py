"""RandAugment as whole-batch tensor functions: every sample its own ops, no host round trip.

What: :class:`BatchRandAugment` applies torchvision's ``v2.RandAugment`` (Cubuk et al. 2020;
its fourteen ops, 31 magnitude bins, sign rule, NEAREST interpolation and fill 0) to a uint8
(N, C, H, W) batch, C = 3 or 1, where each sample has drawn its own ``num_ops`` (op, sign) pairs.
``draw(n, generator)`` makes the draws on the generator's device; ``__call__(x, ops, signs)``
applies them.

Why: the training step is captured in a CUDA graph, and a graph replays fixed kernels on fixed
shapes. So ``__call__`` makes no host round trip (no ``.item()``, ``.tolist()``, ``bool`` of a
tensor, ``nonzero`` or shape that depends on the draws) and has no Python branch on data: each
layer computes every op's result for the whole batch and each sample picks its own
(compute-and-select, one gather). The draws are tensors, and so is everything indexed by them:
per (op, sign) key, a map of where each output pixel comes from (the five geometric ops) and a map
of what each of the 256 levels becomes (Brightness, Posterize, Solarize), one of the two the
identity; both are applied to every sample, in one gather each. The magnitude bin is fixed when the
transform is built. The tables are computed once per device on first use, so make the first call
on a device before capturing, as the usual warm-up does.

Exactness, against ``torchvision.transforms.v2.functional`` applied to each image alone with the
arguments ``v2.RandAugment`` passes (``tests/test_batch_augment.py`` checks each bit for bit on real
CIFAR-10 images, every bin and sign, mixed batches, and the edge cases):

- Magnitudes: torchvision's tables: ``torch.linspace`` in float32, read as doubles, for the linear
  ops; ``round(8 - k / ((bins - 1) / 4))`` bits for Posterize.
- ShearX/Y, TranslateX/Y, Rotate: bit-exact by construction. Each key's pixel map is what
  ``F.affine``/``F.rotate`` compute for one image on the same device: the inverse matrix in double
  precision in their order of operations (shear about pixel (0, 0) by ``degrees(atan(m))``,
  translation by ``int(m)`` pixels, rotation by ``-(m % 360)`` about the centre), cast to float32,
  the same grid of pixel centres through the same ``bmm`` of one image, then ``grid_sample``
  (nearest, zeros) of an image of pixel numbers. Nearest sampling picks pixels without touching
  their values, so gathering through that map is ``grid_sample`` of any image, .5 boundaries
  included (e.g. shear 0.2 lands on one at row 2: the float32 arithmetic decides, and it is the
  same arithmetic). Rotate by 0 degrees (bin 0), which torchvision copies, is the identity map.
- Brightness, Posterize, Solarize: bit-exact by construction; the level map is torchvision's
  operation applied to the levels 0..255 (Solarize compares with ``255 * m`` in float32, as its
  comparison of a uint8 image with a Python float does, so at bin 6, 255 * float32(0.8) =
  204.000003 inverts pixel 204).
- Color, Contrast, Sharpness: bit-exact. torchvision blends with ``add_(other, alpha=1 - f)``, one
  fused multiply-add per element (on the CPU's vector path and on CUDA), so a factor tensor
  (multiply, then add) would round differently: each sign's blend is computed with the same calls
  and Python factor, and selected. Contrast's mean sums whole grey levels (exact in float32 in any
  order, for images up to 256 x 256). Sharpness's 3x3 blur is rounded to whole levels, and
  (3x3 sum + 4 * centre) / 13 is at least 1/26 from a .5, so it is computed here from the exact sum
  and one division (no convolution, so no TF32 either); the border stays as it was.
- AutoContrast (per channel; a flat channel left as it is) and Equalize (PIL's look-up table in
  integer arithmetic, per channel; a channel with fewer than 255 pixels below its brightest level,
  a flat one among them, left as it is): bit-exact, torchvision's operations on each level of a
  per-channel look-up table instead of on each pixel.

Measured on the CPU, where Color, Contrast and Sharpness also rest on the fused add being used
whatever the tensors' layout (tested); on CUDA the tests compare there too when a GPU is present.
The draws follow ``v2.RandAugment``'s distribution (each op uniformly, each signed op negated with
probability 0.5), not its random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

# v2.RandAugment's ops, in its order: an op index here is the index v2.RandAugment draws.
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
SIGNED = frozenset(OPS[1:10])  # ops whose magnitude is negated with probability 0.5
NUM_MAGNITUDE_BINS = 31

# The largest magnitude of each linear op (bin num_bins - 1); Translate's scales with the image side.
_LINEAR_TOP = {
    "ShearX": 0.3,
    "ShearY": 0.3,
    "Rotate": 30.0,
    "Brightness": 0.9,
    "Color": 0.9,
    "Contrast": 0.9,
    "Sharpness": 0.9,
}

# What each layer computes for the whole batch; a sample takes one of them. "pixels" serves the ops
# that move pixels or map each level alone: Identity, Shear, Translate, Rotate, Brightness,
# Posterize, Solarize (each key's pixel map, then its level map, one of them the identity).
_SLOTS = (
    "pixels",
    "color+",
    "color-",
    "contrast+",
    "contrast-",
    "sharpness+",
    "sharpness-",
    "autocontrast",
    "equalize",
)


def magnitudes(op: str, num_bins: int, height: int, width: int) -> Optional[list[float]]:
    """Magnitude of ``op`` at each bin, as ``v2.RandAugment`` uses them (None: the op has none).

    torchvision's tables are float32 ``linspace`` values that it reads back as Python floats, so
    these are too: 0.3 at the top bin of ShearX is float32(0.3), not the double 0.3.
    """
    if op in _LINEAR_TOP or op in ("TranslateX", "TranslateY"):
        top = _LINEAR_TOP.get(op) or 150.0 / 331.0 * (width if op == "TranslateX" else height)
        return torch.linspace(0.0, top, num_bins, dtype=torch.float32).tolist()
    if op == "Solarize":
        return torch.linspace(1.0, 0.0, num_bins, dtype=torch.float32).tolist()
    if op == "Posterize":  # bits kept: 8 at bin 0 down to 4 at the top bin
        return [float(round(8 - k / ((num_bins - 1) / 4))) for k in range(num_bins)]
    if op in OPS:
        return None
    raise ValueError(f"unknown RandAugment op {op!r}; choose one of: {', '.join(OPS)}")


def _inverse_affine(
    center: tuple[float, float], angle: float, translate: tuple[float, float], shear: tuple[float, float]
) -> list[float]:
    """The 2x3 map from output to input pixel coordinates (origin at the image centre) of an affine
    transform at scale 1: rotation by ``angle`` degrees and shears (degrees) about ``center``, then
    ``translate``. Evaluated in the order torchvision evaluates it, so the doubles are the same."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    # The forward rotation-shear R(rot) @ ShY(sy) @ ShX(sx) is [[a, b], [c, d]], determinant 1.
    a = math.cos(rot - sy) / math.cos(sy)
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def _op_matrix(op: str, m: float, height: int, width: int) -> list[float]:
    """The inverse pixel map ``F.affine``/``F.rotate`` use for ``op`` at signed magnitude ``m``
    with v2.RandAugment's arguments; the identity for the ops that move no pixel."""
    corner = (0.0 - width * 0.5, 0.0 - height * 0.5)  # center=[0, 0]: pixel (0, 0), from the image centre
    if op == "ShearX":
        return _inverse_affine(corner, 0.0, (0.0, 0.0), (math.degrees(math.atan(m)), 0.0))
    if op == "ShearY":
        return _inverse_affine(corner, 0.0, (0.0, 0.0), (0.0, math.degrees(math.atan(m))))
    if op == "TranslateX":
        return _inverse_affine((0.0, 0.0), 0.0, (float(int(m)), 0.0), (0.0, 0.0))
    if op == "TranslateY":
        return _inverse_affine((0.0, 0.0), 0.0, (0.0, float(int(m))), (0.0, 0.0))
    if op == "Rotate":  # F.rotate turns by angle % 360 and maps with the negated angle
        return _inverse_affine((0.0, 0.0), -(m % 360), (0.0, 0.0), (0.0, 0.0))
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _source_pixels(matrix: list[float], height: int, width: int, device: torch.device) -> torch.Tensor:
    """For each output pixel, 1 + the flat index of the input pixel F.affine/F.rotate take it from
    (NEAREST), 0 where they fill: their grid arithmetic for one image (same float32 matrix, same
    transposed layout and bmm of one, same grid_sample) run on an image of pixel numbers."""
    theta = torch.tensor(matrix, dtype=torch.float32, device=device).view(1, 2, 3)
    half_size = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=device)
    # Pixel centres from the image centre: torchvision's linspace((1 - w) / 2, (w - 1) / 2, w) has step 1.
    xs = torch.arange(width, dtype=torch.float32, device=device) - (width - 1) * 0.5
    ys = torch.arange(height, dtype=torch.float32, device=device) - (height - 1) * 0.5
    base = torch.stack(
        [xs.expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width, device=device)], dim=-1
    ).view(1, height * width, 3)
    grid = base.bmm(theta.transpose(1, 2).div(half_size)).view(1, height, width, 2)
    numbers = torch.arange(1, height * width + 1, dtype=torch.float32, device=device).view(1, 1, height, width)
    picked = F.grid_sample(numbers, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return picked.view(height * width).long()  # whole numbers below 2**24: exact in float32


@dataclass(frozen=True)
class _Tables:
    """What a call reads on one device, indexed by key = op index * 2 + (1 if negated)."""

    signed: torch.Tensor  # (ops,) bool
    slot: torch.Tensor  # (keys,) int64: which of _SLOTS the key takes
    source: torch.Tensor  # (keys, H * W) int64: 1 + the input pixel each output pixel takes, 0: fill
    lut: torch.Tensor  # (keys, 256) uint8: what each level becomes
    levels: torch.Tensor  # (256,) uint8: 0..255


class BatchRandAugment:
    """torchvision's ``v2.RandAugment(num_ops, magnitude)`` for a batch in which every sample draws
    its own ops and signs; see the module docstring for how and how exactly.

    ``draw(n, generator)`` -> (ops, signs), each (n, num_ops) int64 on the generator's device: op
    indices into :data:`OPS` and the sign (+1 or -1; +1 for unsigned ops) of each layer's magnitude.
    ``__call__(x, ops, signs)`` -> the augmented uint8 batch, shape of ``x``, same device.
    """

    def __init__(
        self, num_ops: int, magnitude: int, image_size: tuple[int, int], num_magnitude_bins: int = NUM_MAGNITUDE_BINS
    ) -> None:
        if num_ops < 0:
            raise ValueError(f"num_ops must be a non-negative integer, got {num_ops}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be a bin in 0..{num_magnitude_bins - 1}, got {magnitude}")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = self.image_size
        self.magnitudes = {}  # op -> magnitude at this bin (unsigned), for ops that have one
        for op in OPS:
            table = magnitudes(op, num_magnitude_bins, h, w)
            if table is not None:
                self.magnitudes[op] = table[magnitude]
        # The blends' factors per sign, 1 + m and 1 + (-m), as Python numbers like torchvision's.
        self.factors = {
            op: (1.0 + self.magnitudes[op], 1.0 + -self.magnitudes[op]) for op in ("Color", "Contrast", "Sharpness")
        }
        self.keys = [(op, negated) for op in OPS for negated in (False, True)]
        self._on: dict[torch.device, _Tables] = {}

    def _signed_magnitude(self, op: str, negated: bool) -> float:
        m = self.magnitudes.get(op, 0.0)
        return -m if negated and op in SIGNED else m

    def tables(self, device: torch.device) -> _Tables:
        """This transform's tables on ``device``, computed there on first use (before any capture)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._on:
            self._on[device] = self._build_tables(device)
        return self._on[device]

    def _build_tables(self, device: torch.device) -> _Tables:
        """Each key's pixel map and level map, computed on ``device`` by the operations torchvision
        runs there on one image, applied to every pixel position or level, so that a lookup is their
        result."""
        h, w = self.image_size
        levels = torch.arange(256, dtype=torch.uint8, device=device)
        bits = int(self.magnitudes["Posterize"])
        keep = 255 if bits >= 8 else ((1 << bits) - 1) << (8 - bits)
        threshold = 255.0 * self.magnitudes["Solarize"]  # compared with uint8 pixels in float32, as torchvision does
        slots, sources, luts = [], [], []
        for op, negated in self.keys:
            m = self._signed_magnitude(op, negated)
            if op in self.factors:
                slots.append(op.lower() + ("-" if negated else "+"))
            else:
                slots.append(op.lower() if op in ("AutoContrast", "Equalize") else "pixels")
            moves = op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
            sources.append(
                _source_pixels(_op_matrix(op, m, h, w), h, w, device)
                if moves
                else torch.arange(1, h * w + 1, device=device)
            )
            if op == "Brightness":
                luts.append(levels.mul(1.0 + m).clamp_(0, 255).to(torch.uint8))
            elif op == "Posterize":
                luts.append(levels.bitwise_and(keep))
            elif op == "Solarize":
                luts.append(torch.where(levels >= threshold, levels.bitwise_not(), levels))
            else:
                luts.append(levels)
        return _Tables(
            signed=torch.tensor([op in SIGNED for op in OPS], device=device),
            slot=torch.tensor([_SLOTS.index(s) for s in slots], device=device),
            source=torch.stack(sources),
            lut=torch.stack(luts),
            levels=levels,
        )

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Each of ``n`` samples' (op, sign) for each of ``num_ops`` layers, as v2.RandAugment draws
        one image's: an op uniformly, and for a signed op the magnitude negated when rand <= 0.5."""
        device = generator.device
        ops = torch.randint(len(OPS), (n, self.num_ops), generator=generator, device=device)
        negated = torch.rand((n, self.num_ops), generator=generator, device=device) <= 0.5
        signs = torch.where(negated & self.tables(device).signed[ops], -1, 1)
        return ops, signs

    def __call__(self, x: torch.Tensor, ops: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        self._check(x, ops, signs)
        t = self.tables(x.device)
        for layer in range(ops.shape[1]):
            x = self._layer(x, ops[:, layer] * 2 + (signs[:, layer] < 0), t)
        return x

    def _check(self, x: torch.Tensor, ops: torch.Tensor, signs: torch.Tensor) -> None:
        """Shapes, dtypes and devices only: nothing here reads a tensor's values."""
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"BatchRandAugment takes uint8 images (N, 1 or 3, H, W); got {x.dtype} {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images are {tuple(x.shape[-2:])} but this BatchRandAugment was built for "
                f"{self.image_size} (Translate's magnitudes and the pixel maps depend on it)"
            )
        if ops.shape != signs.shape or ops.dim() != 2 or ops.shape[0] != x.shape[0]:
            raise ValueError(
                f"ops and signs must both be (N, layers) with N = {x.shape[0]}; "
                f"got {tuple(ops.shape)} and {tuple(signs.shape)}"
            )
        if ops.device != x.device or signs.device != x.device:
            raise ValueError(
                f"images on {x.device}, ops on {ops.device}, signs on {signs.device}: "
                "draw with a generator on the images' device"
            )

    def _layer(self, x: torch.Tensor, key: torch.Tensor, t: _Tables) -> torch.Tensor:
        """One RandAugment layer: every slot's result for the whole batch, then each sample's own."""
        n, c, h, w = x.shape
        out = torch.empty((len(_SLOTS), n, c, h, w), dtype=torch.uint8, device=x.device)
        slot = {name: out[i] for i, name in enumerate(_SLOTS)}
        pixels = x.reshape(n, c, h * w).long()
        # Identity, the geometric ops and the point ops: each level mapped, then each pixel moved (one
        # of the two maps is the identity for any key, so the order is free and the fill stays 0).
        mapped = t.lut[key].gather(1, pixels.view(n, c * h * w)).view(n, c, h * w)
        torch.gather(
            F.pad(mapped, (1, 0)),
            2,
            t.source[key].unsqueeze(1).expand(n, c, h * w),
            out=slot["pixels"].view(n, c, h * w),
        )
        xf = x.float()
        # The grey image of Color and Contrast: torchvision's rgb_to_grayscale in float32, floored.
        if c == 3:
            r, g, b = x.unbind(1)
            grey = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)
        else:
            grey = xf
        # A sum of whole grey levels, exact in float32 in any order up to 2**24 / 255 pixels (256 x 256).
        mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
        for i, sign in enumerate("+-"):
            if c == 3:
                _blend(xf, grey, self.factors["Color"][i], out=slot["color" + sign])
            else:  # adjust_saturation leaves a one-channel image as it is (as PIL does)
                slot["color" + sign].copy_(x)
            _blend(xf, mean, self.factors["Contrast"][i], out=slot["contrast" + sign])
        _sharpen(x, xf, self.factors["Sharpness"], out=(slot["sharpness+"], slot["sharpness-"]))
        torch.gather(_autocontrast_lut(x, t.levels), 2, pixels, out=slot["autocontrast"].view(n, c, h * w))
        torch.gather(_equalize_lut(pixels, t.levels), 2, pixels, out=slot["equalize"].view(n, c, h * w))
        return out[t.slot[key], torch.arange(n, device=x.device)]


def _blend(xf: torch.Tensor, other: torch.Tensor, factor: float, out: torch.Tensor) -> None:
    """``factor * x + (1 - factor) * other`` into uint8 ``out`` with torchvision's two calls (mul,
    fused add); the conversion on copy truncates, as its ``.to(uint8)`` does."""
    out.copy_(xf.mul(factor).add_(other, alpha=1.0 - factor).clamp_(0, 255))


def _sharpen(
    x: torch.Tensor, xf: torch.Tensor, factors: tuple[float, float], out: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """adjust_sharpness at each factor into ``out``: inside the border, x + (1 - f) * (blur - x) (one
    fused add, torchvision's) with blur the 3x3 mean of weights 1/13 (5/13 at the centre) rounded to
    a whole level; the border as it is.

    Exactly, that blur is (3x3 sum + 4 * centre) / 13, which lies j/13 past a whole number and so
    never within 1/26 of a .5; torchvision's float32 convolution and the one division here are both
    within 1e-3 of it, so both round to the same level."""
    h, w = x.shape[-2:]
    for o in out:
        o.copy_(x)
    if h <= 2 or w <= 2:  # no interior: torchvision returns the image (a static shape, not data)
        return
    rows = xf[..., :-2, :] + xf[..., 1:-1, :] + xf[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # whole numbers, exact
    centre = xf[..., 1:-1, 1:-1]
    diff = (box + 4 * centre).div_(13).round_().sub_(centre)
    for o, factor in zip(out, factors):
        o[..., 1:-1, 1:-1].copy_(torch.add(centre, diff, alpha=1.0 - factor).clamp_(0, 255))


def _autocontrast_lut(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(N, C, 256): each channel's levels stretched to 0..255 from its own min and max, with
    torchvision's float32 operations per level; a flat channel's levels stay as they are."""
    low = x.amin(dim=(-2, -1)).float().unsqueeze(-1)
    high = x.amax(dim=(-2, -1)).float().unsqueeze(-1)
    flat = high == low
    scale = (high - low).mul_(1.0 / 255)
    low = torch.where(flat, 0.0, low)
    scale = torch.where(flat, 1.0, scale)
    return (levels.float() - low).div_(scale).clamp_(0, 255).to(torch.uint8)


def _equalize_lut(pixels: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) from int64 pixels (N, C, H * W): PIL's histogram equalisation per channel (as
    torchvision's tensor version computes it), (cumulative count + step // 2) // step shifted one
    level up, with step = (pixels below the channel's brightest level) // 255; where step is 0 (one
    level, or nearly) the channel's levels stay as they are."""
    n, c, size = pixels.shape
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=pixels.device)
    hist.scatter_add_(2, pixels, pixels.new_ones(()).expand_as(pixels))
    step = (size - hist.gather(2, pixels.amax(dim=2, keepdim=True))) // 255  # (n, c, 1)
    lut = (hist.cumsum(2)[..., :-1] + step // 2) // step.clamp(min=1)
    lut = F.pad(lut.clamp_(0, 255), (1, 0)).to(torch.uint8)  # level 0 maps to 0
    return torch.where(step > 0, lut, levels)
