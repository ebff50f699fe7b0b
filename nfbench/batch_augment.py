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
(compute-and-select, one gather). The draws, the per-sample magnitudes and the affine matrices are
tensors; only the magnitude bin, fixed when the transform is built, enters as Python numbers.
The tables a call reads are built once per device (a host-to-device copy, so make the first call on
a device before capturing, as the usual warm-up does).

Exactness, against ``torchvision.transforms.v2.functional`` applied to each image alone with the
arguments ``v2.RandAugment`` passes (``tests/test_batch_augment.py`` checks each on real CIFAR-10
images, every bin and sign, and the edge cases):

- Magnitudes: the tables are torchvision's: ``torch.linspace`` in float32, read as doubles, for
  the linear ones; ``round(8 - k / ((bins - 1) / 4))`` bits for Posterize.
- ShearX/Y, TranslateX/Y, Rotate: bit-exact. One affine grid for all five: per (op, sign) the
  inverse pixel map is computed in double precision in the order ``F.affine``/``F.rotate``
  evaluate it (shear about pixel (0, 0) by ``degrees(atan(m))``, translation by ``int(m)`` pixels,
  rotation by ``-(m % 360)`` about the centre), cast to float32, divided by half the image size
  and multiplied into the same grid of pixel centres by the same ``bmm``, then sampled with
  ``grid_sample`` (nearest, zeros), as torchvision does per image. Where a source coordinate is
  exactly a nearest-neighbour .5 boundary (shear 0.2 at row 2, say) the float32 arithmetic decides,
  and it is the same arithmetic. Rotate by 0 degrees (bin 0), which torchvision copies, is the
  identity grid: its coordinates land within float error of whole pixels.
- Brightness: bit-exact; ``x * float32(1 + m)`` per sample is torchvision's product.
- Color, Contrast, Sharpness: bit-exact. torchvision blends with ``add_(other, alpha=1 - f)``,
  which is one fused multiply-add on the CPU's vector path (and on CUDA), so a per-sample factor
  tensor would round differently; each sign's blend is therefore computed with the same call and
  Python factor, and selected. Contrast's mean sums whole grey values (exact in float32 in any
  order). Sharpness's 3x3 blur is rounded to whole values, and (8 neighbours + 5 centre) / 13 is at
  least 1/26 from a .5 boundary, so no summation order changes it; the border stays as it was.
- Posterize (``x & mask``), Solarize (``x >= 255 * m`` compared in float32, as torchvision's
  comparison of a uint8 image with a Python float is; pixels at the threshold are inverted),
  AutoContrast (per channel, a flat channel left as it is), Equalize (PIL's look-up table in integer
  arithmetic, per channel; a channel of one value left as it is): bit-exact, integer or correctly
  rounded float32 arithmetic.

Measured on the CPU; on CUDA the same claims rest on ``bmm`` computing each sample's grid like a
batch of one, and on ``conv2d`` not using TF32 for the blur (``tests`` compare there too when a GPU
is present). The draws follow ``v2.RandAugment``'s distribution (each op uniformly, each signed op
negated with probability 0.5), not its random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

# v2.RandAugment's ops, in its order: an op index here is the index v2.RandAugment draws.
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = frozenset(OPS[1:10])  # ops whose magnitude is negated with probability 0.5
NUM_MAGNITUDE_BINS = 31

# The largest magnitude of each linear op (bin num_bins - 1); Translate's scales with the image side.
_LINEAR_TOP = {"ShearX": 0.3, "ShearY": 0.3, "Rotate": 30.0, "Brightness": 0.9, "Color": 0.9,
               "Contrast": 0.9, "Sharpness": 0.9}

# What each layer computes for the whole batch, in order; a sample takes one of them.
_SLOTS = ("identity", "warp", "brightness", "color+", "color-", "contrast+", "contrast-",
          "sharpness+", "sharpness-", "posterize", "solarize", "autocontrast", "equalize")


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


def _inverse_affine(center: tuple[float, float], angle: float, translate: tuple[float, float],
                    shear: tuple[float, float]) -> list[float]:
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


@dataclass(frozen=True)
class _Tables:
    """What a call reads on one device, indexed by key = op index * 2 + (1 if negated)."""

    signed: torch.Tensor  # (ops,) bool
    slot: torch.Tensor  # (2 * ops,) int64: which of _SLOTS the key takes
    theta: torch.Tensor  # (2 * ops, 2, 3) float32 inverse pixel maps
    half_size: torch.Tensor  # (2,) float32: half the width and height (the grid's normalisation)
    base: torch.Tensor  # (1, H * W, 3) float32 output pixel centres from the image centre, and 1
    brightness: torch.Tensor  # (2 * ops,) float32 factor 1 + m (1 for the other ops)
    blur: torch.Tensor  # (1, 1, 3, 3) float32 kernel of adjust_sharpness's degenerate image


class BatchRandAugment:
    """torchvision's ``v2.RandAugment(num_ops, magnitude)`` for a batch in which every sample draws
    its own ops and signs; see the module docstring for how and how exactly.

    ``draw(n, generator)`` -> (ops, signs), each (n, num_ops) int64 on the generator's device: op
    indices into :data:`OPS` and the sign (+1 or -1; +1 for unsigned ops) of each layer's magnitude.
    ``__call__(x, ops, signs)`` -> the augmented uint8 batch, shape of ``x``, same device.
    """

    def __init__(self, num_ops: int, magnitude: int, image_size: tuple[int, int],
                 num_magnitude_bins: int = NUM_MAGNITUDE_BINS) -> None:
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
        # The blends' factors per sign (see the module docstring: Python numbers, as torchvision's).
        self.factors = {op: (1.0 + self.magnitudes[op], 1.0 + -self.magnitudes[op])
                        for op in ("Color", "Contrast", "Sharpness")}
        bits = int(self.magnitudes["Posterize"])
        self.posterize_mask = 255 if bits >= 8 else ((1 << bits) - 1) << (8 - bits)
        self.solarize_threshold = 255.0 * self.magnitudes["Solarize"]
        self._cpu = self._build_tables()
        self._on: dict[torch.device, _Tables] = {torch.device("cpu"): self._cpu}

    def _signed_magnitude(self, op: str, negated: bool) -> float:
        m = self.magnitudes.get(op, 0.0)
        return -m if negated and op in SIGNED else m

    def _build_tables(self) -> _Tables:
        h, w = self.image_size
        keys = [(op, negated) for op in OPS for negated in (False, True)]
        slot_of = {"Identity": "identity", "Brightness": "brightness", "Posterize": "posterize",
                   "Solarize": "solarize", "AutoContrast": "autocontrast", "Equalize": "equalize"}
        slots = []
        for op, negated in keys:
            if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
                slots.append("warp")
            elif op in self.factors:
                slots.append(op.lower() + ("-" if negated else "+"))
            else:
                slots.append(slot_of[op])
        matrices = [_op_matrix(op, self._signed_magnitude(op, negated), h, w) for op, negated in keys]
        bright = [1.0 + self._signed_magnitude(op, negated) if op == "Brightness" else 1.0
                  for op, negated in keys]
        # Pixel centres: torchvision's linspace((1 - w) / 2, (w - 1) / 2, w) has step exactly 1.
        xs = torch.arange(w, dtype=torch.float32) - (w - 1) * 0.5
        ys = torch.arange(h, dtype=torch.float32) - (h - 1) * 0.5
        base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w)], dim=-1)
        a, b = 1.0 / 13.0, 5.0 / 13.0
        return _Tables(
            signed=torch.tensor([op in SIGNED for op in OPS]),
            slot=torch.tensor([_SLOTS.index(s) for s in slots]),
            theta=torch.tensor(matrices, dtype=torch.float32).view(len(keys), 2, 3),
            half_size=torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32),
            base=base.reshape(1, h * w, 3),
            brightness=torch.tensor(bright, dtype=torch.float32),
            blur=torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32).view(1, 1, 3, 3))

    def tables(self, device: torch.device) -> _Tables:
        """This transform's tables on ``device``, copied there on first use."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._on:
            self._on[device] = _Tables(**{k: v.to(device) for k, v in vars(self._cpu).items()})
        return self._on[device]

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
            raise ValueError(f"images are {tuple(x.shape[-2:])} but this BatchRandAugment was built for "
                             f"{self.image_size} (Translate's magnitudes and the grid depend on it)")
        if ops.shape != signs.shape or ops.dim() != 2 or ops.shape[0] != x.shape[0]:
            raise ValueError(f"ops and signs must both be (N, layers) with N = {x.shape[0]}; "
                             f"got {tuple(ops.shape)} and {tuple(signs.shape)}")
        if ops.device != x.device or signs.device != x.device:
            raise ValueError(f"images on {x.device}, ops on {ops.device}, signs on {signs.device}: "
                             "draw with a generator on the images' device")

    def _layer(self, x: torch.Tensor, key: torch.Tensor, t: _Tables) -> torch.Tensor:
        """One RandAugment layer: every slot's result for the whole batch, then each sample's own."""
        n, c, h, w = x.shape
        xf = x.float()
        # The grey image of Color and Contrast (torchvision's rgb_to_grayscale, floored for uint8).
        if c == 3:
            r, g, b = x.unbind(1)
            grey = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)
        else:
            grey = xf
        mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
        results = {
            "identity": x,
            "warp": _warp(xf, t.theta[key], t.half_size, t.base),
            "brightness": xf.mul(t.brightness[key].view(n, 1, 1, 1)).clamp_(0, 255).to(torch.uint8),
            "posterize": x.bitwise_and(self.posterize_mask),
            "solarize": torch.where(x >= self.solarize_threshold, x.bitwise_not(), x),
            "autocontrast": _autocontrast(xf),
            "equalize": _equalize(x),
        }
        for sign, i in (("+", 0), ("-", 1)):
            # Color leaves a one-channel image as it is (adjust_saturation matches PIL there).
            results["color" + sign] = _blend(x, grey, self.factors["Color"][i]) if c == 3 else x
            results["contrast" + sign] = _blend(x, mean, self.factors["Contrast"][i])
        results["sharpness+"], results["sharpness-"] = _sharpen(xf, t.blur, self.factors["Sharpness"])
        stacked = torch.stack([results[s] for s in _SLOTS])
        return stacked[t.slot[key], torch.arange(n, device=x.device)]


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` with torchvision's two calls (mul, fused add)."""
    return x.mul(factor).add_(other, alpha=1.0 - factor).clamp_(0, 255).to(torch.uint8)


def _warp(xf: torch.Tensor, theta: torch.Tensor, half_size: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling of each image through its own inverse pixel map (N, 2, 3),
    zeros outside: torchvision's affine grid and grid_sample, a batch of maps at once."""
    n, _, h, w = xf.shape
    # Transposed then divided, as torchvision lays the grid's matrix out for its bmm.
    grid = base.expand(n, -1, -1).bmm(theta.transpose(1, 2).div(half_size)).view(n, h, w, 2)
    out = F.grid_sample(xf, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8)  # nearest samples are whole pixel values or the zero fill


def _sharpen(xf: torch.Tensor, blur: torch.Tensor, factors: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """adjust_sharpness at each factor: the interior blended with its rounded 3x3 blur, border kept."""
    n, c, h, w = xf.shape
    if h <= 2 or w <= 2:  # no interior: torchvision returns the image (a static shape, not data)
        return tuple(xf.to(torch.uint8) for _ in factors)
    diff = F.conv2d(xf, blur.expand(c, 1, 3, 3), groups=c).round_().sub_(xf[..., 1:-1, 1:-1])
    outs = []
    for factor in factors:
        out = xf.clone()
        out[..., 1:-1, 1:-1].add_(diff, alpha=1.0 - factor)
        outs.append(out.clamp_(0, 255).to(torch.uint8))
    return tuple(outs)


def _autocontrast(xf: torch.Tensor) -> torch.Tensor:
    """Each channel stretched to 0..255 from its own min and max; a flat channel is left as it is."""
    low = xf.amin(dim=(-2, -1), keepdim=True)
    high = xf.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = (high - low).mul_(1.0 / 255)
    low = torch.where(flat, 0.0, low)
    scale = torch.where(flat, 1.0, scale)
    return (xf - low).div_(scale).clamp_(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalisation per channel (torchvision's tensor version of it): the look-up
    table (cumulative count + step // 2) // step with step = (pixels below the channel's brightest
    value) // 255, shifted one level up; a channel with step 0 (one value, or nearly) is left as it is."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w).long()
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(2, flat, flat.new_ones(()).expand_as(flat))
    step = (h * w - hist.gather(2, flat.amax(dim=2, keepdim=True))) // 255  # (n, c, 1)
    lut = (hist.cumsum(2)[..., :-1] + step // 2) // step.clamp(min=1)
    lut = F.pad(lut.clamp_(0, 255), (1, 0)).to(torch.uint8)  # level 0 maps to 0
    equalized = lut.gather(2, flat).view(n, c, h, w)
    return torch.where(step.unsqueeze(-1) > 0, equalized, x)
