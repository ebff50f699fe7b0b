"""Typed configuration: the schema behind every file in ``conf/``.

Hydra merges the YAML group files into these dataclasses, so it refuses at composition, naming the key,
a wrong *type* (``trainer.epochs=abc``), a value outside a closed set (``trainer.precision=fp8``: the
sets are :class:`Choice` enums) and an unknown key.  A key that belongs to one option lives in that
option's schema (:data:`OPTION_SCHEMAS`: ``init.alpha`` in :class:`NFInitConfig`, the schema of
conf/init/nf.yaml), so the same key under another option is Hydra's unknown-key error too.  Values that
are well typed but impossible (``optim.lr=-1``) are refused by :func:`check_values`; the rules of a
scheme or a model where that is built (:func:`nfbench.engine.validation.validate`).  This module imports
nothing else of nfbench's but its errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from enum import Enum
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from nfbench.errors import ConfigError


class Choice(str, Enum):
    """A closed set of values, each member named as its value: Hydra refuses any other name, listing
    the members, and a member compares, hashes, prints and serialises as the plain string (config.yaml,
    result.json and checkpoints hold strings: :func:`plain`)."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Stem(Choice):
    auto = "auto"
    cifar = "cifar"
    imagenet = "imagenet"


class WeightRule(Choice):
    he_fanin = "he_fanin"
    he_fanout = "he_fanout"
    brock = "brock"


class Optimizer(Choice):
    sgd = "sgd"


class Schedule(Choice):
    cosine = "cosine"
    multistep = "multistep"
    constant = "constant"


class Precision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class SppInput(Choice):
    gaussian = "gaussian"
    data = "data"


class SppLabels(Choice):
    random = "random"
    data = "data"


class FigureFormat(Choice):
    png = "png"
    pdf = "pdf"
    svg = "svg"


class Decode(Choice):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class OptimizedMetric(Choice):
    """Accuracies in percent, higher is better: train()'s result.json keys a sweeper may maximise."""

    val_top1 = "val_top1"
    val_top5 = "val_top5"
    best_val_top1 = "best_val_top1"
    test_top1 = "test_top1"
    test_top5 = "test_top5"


@dataclass
class DataConfig:
    """The data set and its loading, augmentation and splits (conf/data/)."""

    name: str = "digits"  # the data set: digits, cifar10, cifar100, imagefolder, imagenet
    root: str = "${oc.env:NFBENCH_DATA,data}"  # folder that holds it ($NFBENCH_DATA, else ./data)
    download: bool = True  # download CIFAR into data.root when it is not there
    batch_size: int = 128  # training images per optimiser step, over all processes
    test_batch_size: int = 256  # images per evaluation batch (test set and validation split)
    num_workers: int = 0  # DataLoader worker processes (on the device: RandAugment's, when it is on)
    # Hold an in-memory data set (digits, CIFAR, a small image folder) on the training device and augment it
    # there in batches (nfbench/data/device.py): true, false or "auto" (whenever the data set allows it).
    on_device: Any = "auto"
    # An image folder is decoded into memory for on_device when all its images are one square size and take
    # at most this many GB as uint8 pixels (CIFAR-10's 60,000: 0.18 GB); a larger one reads its files.
    in_memory_max_gb: float = 4.0
    # Training-set augmentation: random crop with zero padding, flip, RandAugment.
    crop_padding: int = 4  # zero padding of the random crop, in pixels (0: no crop)
    hflip: bool = True  # mirror half the training images
    randaugment: bool = False  # RandAugment (Cubuk et al. 2020) after crop and flip
    randaugment_n: int = 2  # RandAugment's ops per image
    randaugment_m: int = 9  # RandAugment's magnitude, 0-30
    # Image side the model sees, null: the data set's own; ImageNet-style recipe (random-resized crop,
    # resize + centre crop for test) for data=imagenet, a resize otherwise.
    image_size: Optional[int] = None
    # Where ImageNet-recipe JPEG files are decoded (data=imagenet; nfbench/data/gpu_decode.py).  cpu: PIL in the
    # DataLoader workers, each image cropped and resized there by torchvision (v2.RandomResizedCrop, Resize +
    # CenterCrop).  gpu: the workers only read the files' bytes; the training process decodes each batch with
    # torchvision.io.decode_jpeg on the training device (nvJPEG on CUDA; libjpeg-turbo when that device is the
    # CPU) and crops, resizes (roi_align), flips and normalises the whole batch there, with the same crop-box
    # distribution.  auto: gpu on a CUDA device, cpu otherwise (and with RandAugment, which only the cpu path
    # has).  The choice a run resolved is in its checkpoints: a resume that would resolve another is refused.
    decode: Decode = Decode.auto
    # A validation split held out of the training set for model selection, evaluated every epoch beside the
    # test set with the test transform; checkpoints/best.pt and result.json's best figures are selected on it.
    # null: none (best.pt is then selected on the test set, an optimistic figure); an int: that many
    # images; a float in (0, 1): that fraction of the training set, rounded to the nearest image.
    # Per class where labels are known (in-memory sets, image folders), from a permutation seeded by
    # nfbench.data.sets.SPLIT_SEED, not the run's seed: every run of a sweep holds out the same images.
    # It is taken first, from the whole training set; data.train_subset then subsets the rest.
    val_size: Any = None
    # Optional subsets (first N of a seeded permutation) for quick experiments and tests.
    train_subset: Optional[int] = None  # train on the first N of a fixed permutation (null: all)
    test_subset: Optional[int] = None  # evaluate on the first N of a fixed permutation (null: all)
    mean: Optional[list[float]] = None  # per-channel normalisation mean (null: the data set's own)
    std: Optional[list[float]] = None  # per-channel normalisation std (null: the data set's own)
    # He et al. 2016a's per-pixel mean subtraction in place of data.mean/data.std: x/255 minus the mean image (per
    # pixel and channel, [0, 1] scale, no std) of the images trained on, the same for training, validation and
    # test images, subtracted after crop and flip (in the crop's coordinates).  The mean is taken once
    # data.val_size has held out its split and data.train_subset has subset the rest.  Needs data.mean and
    # data.std null and the data set's own image size (data.image_size null or that size), so not data=imagenet.
    pixel_mean: bool = False
    # Image folders: check every file's header and end before training (nfbench/data/folders.py; about
    # 25 us a file), refusing a damaged one by name; skip_corrupt drops such files and counts them.
    verify: bool = True
    skip_corrupt: bool = False  # with verify, train without the unreadable files (counted in the log)


@dataclass
class ModelConfig:
    """The network (conf/model/)."""

    # The architecture: resnet18-152, resnet20-110 (CIFAR; pre-activation), wrn, nf_resnet26-101 (timm; init=nf),
    # he_resnet20-110 (He et al. 2016a's own post-activation CIFAR ResNets with BatchNorm; init=bn).
    name: str = "resnet20"
    # Stage-1 width; None keeps the published widths (64 or 16).
    width: Optional[int] = None
    # "auto" picks the stem from the image size: CIFAR (<= 64 px) or ImageNet.
    stem: Stem = Stem.auto


@dataclass
class WideResNetConfig(ModelConfig):
    """The wide ResNet WRN-depth-widen (Zagoruyko & Komodakis 2016)."""

    depth: int = 28  # depth d = 6n + 4 of WRN-d-k (10, 16, 22, 28, 40, ...)
    widen: int = 10  # widen factor k of WRN-d-k


@dataclass
class InitConfig:
    """The initialisation scheme, the axis under study (conf/init/)."""

    name: str = "convshort"  # the scheme: bn, convshort, fixup, idshort, learnscalar, nf, plain, rezero, ...
    # he_fanin | he_fanout | brock; None takes the scheme's default (docs/science.md#scheme-defaults).
    weights: Optional[WeightRule] = None
    # The stem conv's rule alone, where the rules differ most (3 raw input channels): he_fanin | he_fanout |
    # brock; null: init.weights' rule, as every other conv.  Per unit input variance the CIFAR stem
    # (3x3, 3 -> 16) sends Var 2.0 (he_fanin), 0.375 (he_fanout) or 2.93 (brock) on (docs/schemes.md).
    stem_weights: Optional[WeightRule] = None
    # Civitelli et al.: empirical standardisation to the target mean/variance after sampling.
    standardize: bool = True


@dataclass
class BNInitConfig(InitConfig):
    """The BatchNorm baseline (He et al. 2016b)."""

    # A 1x1 conv shortcut in every block (ConvShort's network with BatchNorm), the baseline whose parameter
    # counts Civitelli et al. Tables 1-2 print as "BatchNorm".
    conv_shortcut: bool = False


@dataclass
class FixupInitConfig(InitConfig):
    """Fixup (Zhang, Dauphin, Ma 2019)."""

    # hongyi-zhang/Fixup's post-activation CIFAR block (option-A shortcut) instead of the pre-activation one.
    reference_block: bool = False


@dataclass
class NFInitConfig(InitConfig):
    """NF-ResNets (Brock, De, Smith 2021a), x_{l+1} = x_l + alpha g f(x_l / beta_l)."""

    alpha: float = 0.2  # the residual branch's weight alpha (Brock et al. 2021a: 0.2)
    skip_gain: float = 0.0  # the skip gain g's initial value (0: every block starts as the identity)


@dataclass
class OptimConfig:
    """The optimiser (conf/optim/)."""

    name: Optimizer = Optimizer.sgd  # the optimiser: sgd
    lr: float = 0.01  # learning rate at the batch size data.batch_size
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 0.0  # L2 weight decay
    # Parameters of scalar modules (LearnScalar's alpha, Fixup's biases and
    # multipliers, SkipInit's gate) get no weight decay; biases and norm affines optionally.
    no_decay_scalars: bool = True
    no_decay_bias: bool = False  # no weight decay on biases and normalisation affines either
    # Learning-rate multiplier for scalar parameters (Fixup's reference code: 0.1).
    scalar_lr_mult: float = 1.0
    # Gradient clipping: by global norm (0 = off) or AGC's clip factor (0 = off).
    clip_grad_norm: float = 0.0
    agc: float = 0.0  # adaptive gradient clipping's clip factor (Brock et al. 2021; 0 = off)


@dataclass
class SchedConfig:
    """The learning-rate schedule (conf/sched/)."""

    name: Schedule = Schedule.cosine  # the schedule: cosine, multistep, constant
    # Step the schedule every optimiser step instead of every epoch.
    per_step: bool = False
    warmup_epochs: float = 0.0  # linear warm-up to optim.lr, in epochs (fractions allowed)
    min_lr: float = 0.0  # the learning rate cosine decays to
    # multistep: epochs at which the learning rate is multiplied by gamma.
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1  # multistep: the factor at each milestone


@dataclass
class TrainerConfig:
    """The training loop: length, device, precision, checkpoints and logs (conf/trainer/)."""

    epochs: int = 10  # training epochs
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    precision: Precision = Precision.fp32  # fp32, bf16 or fp16 (autocast)
    channels_last: bool = False  # channels-last memory format for the network and its inputs
    compile: bool = False  # torch.compile the network
    # torch.compile's mode when trainer.compile=true: null (torch's default), reduce-overhead (CUDA graphs:
    # for launch-bound small networks on a GPU), max-autotune, max-autotune-no-cudagraphs.
    compile_mode: Optional[str] = None
    # Capture the whole training step (forward, loss, backward, clipping, SGD, the epoch metrics' sums) once
    # in a CUDA graph and replay it per batch (nfbench/engine/graph.py): for launch-bound small networks on a
    # GPU.  CUDA only, one process, fp32 or bf16, no mixup/CutMix, not with trainer.compile; evaluation stays eager.
    cuda_graph: bool = False
    deterministic: bool = False  # deterministic algorithms only (torch.use_deterministic_algorithms)
    label_smoothing: float = 0.0  # label smoothing of the cross-entropy loss
    mixup_alpha: float = 0.0  # mixup's Beta(alpha, alpha) (0 = off)
    cutmix_alpha: float = 0.0  # CutMix's Beta(alpha, alpha) (0 = off)
    # PATH to a checkpoint or a run directory, used while this run directory has no last.pt of its own
    # (which always comes first, so a requeue never rolls back); see nfbench.rundir.load_resume_state.
    resume: Optional[str] = None
    log_every: int = 20  # optimiser steps between training-metric logs
    # A tqdm bar on a terminal; without one (SLURM, nohup, CI) a plain line every progress_every_s
    # seconds, at the first log step after the interval (0: at every log step).  false: neither.
    progress: bool = True
    progress_every_s: float = 30.0  # seconds between plain progress lines without a terminal
    # Run directory when train() is called outside Hydra (tests, notebooks).
    run_dir: Optional[str] = None
    # Processes to start on this machine (one per GPU, or CPU workers with gloo); a job started by
    # torchrun or SLURM with several tasks is detected from its environment instead.
    devices: int = 1
    # Also checkpoint every N optimiser steps inside an epoch (0 = only at epoch ends).
    checkpoint_every_steps: int = 0
    # Every N epochs, log the per-block signal propagation statistics (nfbench spp) to TensorBoard; 0 = off.
    log_spp_every: int = 0


@dataclass
class SppConfig:
    """Signal propagation plots, ``nfbench spp`` (docs/science.md#spp; Civitelli et al. Fig. 2)."""

    batch_size: int = 32  # images per measured batch
    # Independent repeats (network, inputs, labels); the plot shows their mean and min-max band.
    seeds: int = 1
    # gaussian: unit Gaussian inputs; data: a batch of the configured data set's test images.
    input: SppInput = SppInput.gaussian
    # random: uniform random labels; data: the batch's own labels (input=data only).
    labels: SppLabels = SppLabels.random
    # Gaussian input shape and class count: CIFAR-10's, the paper's setting (Civitelli et al. Table 1).
    image_size: int = 32
    in_chans: int = 3  # Gaussian inputs' channels
    num_classes: int = 10  # classes of the network's head (input=gaussian)
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.png])  # figure files: png, pdf, svg


@dataclass
class Config:
    """The run as a whole: its seed and its experiment tag; a section per config group follows."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    spp: SppConfig = field(default_factory=SppConfig)
    # The loggers selected (conf/logger/), each under its name with its own keys (nfbench/loggers.py): metrics go
    # there besides metrics.jsonl.
    logger: dict[str, Any] = field(default_factory=dict)
    # Per-epoch hooks selected (conf/hooks/), each under its name with its own keys (nfbench/engine/hooks.py).
    hooks: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # seeds the network's initialisation, the data order and the augmentation
    # Free-form tag that experiment presets set; shows up in result.json.
    experiment: Optional[str] = None
    # The final figure `nfbench train` returns to a sweeper (Hydra's Optuna sweeper, direction
    # maximize; lightning-hydra-template's optimized_metric): an OptimizedMetric, a top-1 or top-5
    # in percent from result.json.  null: val_top1 when data.val_size holds out a validation split, else
    # test_top1, which tunes on the test set: for quick looks only, never a result to report.  A run
    # that diverged, an invalid point or a missing figure returns 0.0, below any run that learned.
    optimized_metric: Optional[OptimizedMetric] = None


def optimized_metric(cfg: DictConfig | Config) -> str:
    """The result.json key a sweeper optimises: ``optimized_metric``, else the validation top-1 once
    ``data.val_size`` holds out a validation split, else the test top-1."""
    if cfg.optimized_metric is not None:
        return str(cfg.optimized_metric)
    return "test_top1" if cfg.data.val_size is None else "val_top1"


def tasks_per_node(gpus_per_node: int) -> int:
    """conf/hydra/launcher/slurm.yaml: one task (DDP rank) per GPU, so a job needs at least one GPU."""
    require(
        gpus_per_node >= 1,
        "hydra.launcher.gpus_per_node",
        gpus_per_node,
        "must be >= 1 (one task per GPU); for a CPU-only job also set hydra.launcher.tasks_per_node=N",
    )
    return gpus_per_node


# Options with keys of their own: the schema of conf/GROUP/OPTION.yaml, which names it first in its
# defaults list as /nfbench_schema_GROUP_OPTION@_here_ (Hydra's "Structured Config schema" for a config
# group; stored outside the groups, so that it is no option of one).  Their keys exist under that option
# only: under any other, Hydra refuses them as unknown keys.
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"wrn": WideResNetConfig},
    "init": {"bn": BNInitConfig, "fixup": FixupInitConfig, "nf": NFInitConfig},
}
GROUP_SCHEMAS: dict[str, type] = {"model": ModelConfig, "init": InitConfig}


def option_schema(group: str, name: Optional[str]) -> type:
    """The dataclass behind option ``name`` of ``group`` (``model`` or ``init``): its own, else the group's."""
    return OPTION_SCHEMAS[group].get(name or "", GROUP_SCHEMAS[group])


def option_config(group: str, name: str, **values: Any) -> Any:
    """Option ``name``'s config with ``values`` (``option_config("init", "nf", alpha=0.1)``), outside Hydra."""
    return option_schema(group, name)(name=name, **values)


def schema(tree: Mapping[str, Any]) -> DictConfig:
    """The schema, with defaults, for the options ``tree`` (a plain config) selects."""
    cfg = OmegaConf.structured(Config)
    for group in OPTION_SCHEMAS:
        name = (tree.get(group) or {}).get("name")
        cfg[group] = OmegaConf.structured(option_schema(group, name)(name=name) if name else GROUP_SCHEMAS[group])
    return cfg


def typed(tree: Mapping[str, Any]) -> DictConfig:
    """A plain config (a run's config.yaml, a spawned worker's) typed as Hydra types it.  A run of an
    nfbench before option-specific keys wrote every option's keys, null or false where they did not
    apply: those are left out."""
    cfg = schema(tree)
    kept = {
        group: (
            {k: v for k, v in values.items() if k in cfg[group] or v not in (None, False)}
            if group in OPTION_SCHEMAS and isinstance(values, Mapping)
            else values
        )
        for group, values in tree.items()
    }
    return OmegaConf.merge(cfg, kept)  # type: ignore[return-value]


def check_keys(cfg: DictConfig | Config) -> None:
    """Refuse a key the schema of the selected options does not have.  Hydra refuses one given as
    ``key=value``, but ``+key=value`` adds any key (that is what ``+`` is for), and nfbench would then
    run without ever reading it: a typo such as ``+trainer.epoch=5`` trained the default budget."""
    tree = (
        OmegaConf.to_container(cfg, resolve=False)
        if isinstance(cfg, DictConfig)
        else OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)
    )
    ref = schema(tree)  # type: ignore[arg-type]
    unknown: list[str] = []

    def walk(values: Mapping[str, Any], node: DictConfig, prefix: str) -> None:
        if not is_dataclass(OmegaConf.get_type(node)):
            return  # a free-form mapping: any key is the user's
        for key, value in values.items():
            if key not in node:
                unknown.append(prefix + str(key))
            elif isinstance(value, Mapping) and isinstance(child := node._get_node(key), DictConfig):
                walk(value, child, f"{prefix}{key}.")

    walk(tree, ref, "")  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: not a key nfbench reads (a '+' override adds any key, and this "
            f"one would be ignored); remove it, or see `nfbench train --help` for the keys"
        )


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain values, the closed sets' members as their strings: what
    config.yaml, result.json, checkpoints and loggers hold."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """A ConfigError naming ``key``, its ``value`` and what is ``allowed``, unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """``data.batch_size`` is the global batch: each of ``world_size`` processes takes an equal share."""
    require(
        batch_size % world_size == 0,
        "data.batch_size",
        batch_size,
        f"must be divisible by the number of processes ({world_size}); choose a multiple of {world_size}",
    )
    return batch_size // world_size


def _non_finite(tree: Any, prefix: str = "") -> Optional[tuple[str, float]]:
    """The first float of a config tree (lists included) that is NaN or infinite, with its dotted key."""
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}{key}" if isinstance(tree, Mapping) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, float) and not math.isfinite(value):
            return name, value
        found = _non_finite(value, name + ".") if isinstance(value, (Mapping, list)) else None
        if found:
            return found
    return None


def check_values(cfg: DictConfig | Config) -> None:
    """Fail on any value that cannot work, naming key and range: everything that needs no registry
    (and so no torch).  :func:`nfbench.engine.validation.validate` runs these, then checks the names.
    First of all, no number is NaN or infinite: every float key has a finite range, and a NaN
    passes every comparison of the range checks below (``nan < 0`` is false)."""
    c = cfg
    tree = (
        OmegaConf.to_container(cfg, resolve=True)
        if isinstance(cfg, DictConfig)
        else OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    )
    bad = _non_finite(tree)
    if bad is not None:
        raise ConfigError(f"{bad[0]}={bad[1]} is not allowed: must be a finite number")
    _check_data(c)
    _check_model_and_optimiser(c)
    _check_trainer(c)
    _check_spp_and_objective(c)


def _check_data(c: DictConfig | Config) -> None:
    """The value checks of ``data.*`` (:func:`check_values` runs them in this order)."""
    require(c.data.batch_size >= 1, "data.batch_size", c.data.batch_size, "must be >= 1")
    require(c.data.test_batch_size >= 1, "data.test_batch_size", c.data.test_batch_size, "must be >= 1")
    require(c.data.num_workers >= 0, "data.num_workers", c.data.num_workers, "must be >= 0")
    require(
        isinstance(c.data.on_device, bool) or c.data.on_device == "auto",
        "data.on_device",
        c.data.on_device,
        "choose true, false or auto",
    )
    require(
        c.data.in_memory_max_gb >= 0,
        "data.in_memory_max_gb",
        c.data.in_memory_max_gb,
        "must be >= 0 (0: image folders always read their files)",
    )
    require(c.data.crop_padding >= 0, "data.crop_padding", c.data.crop_padding, "must be >= 0")
    require(c.data.randaugment_n >= 0, "data.randaugment_n", c.data.randaugment_n, "must be >= 0")
    require(
        0 <= c.data.randaugment_m <= 30,
        "data.randaugment_m",
        c.data.randaugment_m,
        "must be in [0, 30] (torchvision's magnitude bins)",
    )
    v = c.data.val_size
    require(
        v is None or (type(v) is int and v >= 1) or (type(v) is float and 0 < v < 1),
        "data.val_size",
        v,
        "must be null, a number of images >= 1, or a fraction of the training set in (0, 1)",
    )
    for key in ("train_subset", "test_subset", "image_size"):
        v = getattr(c.data, key)
        require(v is None or v >= 1, f"data.{key}", v, "must be >= 1 or null")
    if c.data.mean is not None or c.data.std is not None:
        if c.data.pixel_mean:
            raise ConfigError(
                f"data.pixel_mean=true cannot run with data.mean={c.data.mean} data.std={c.data.std}: "
                f"it subtracts the training images' mean image and divides by no std; set data.mean="
                f"null data.std=null, or data.pixel_mean=false"
            )
        require(
            c.data.mean is not None and c.data.std is not None and len(c.data.mean) == len(c.data.std),
            "data.mean/data.std",
            (c.data.mean, c.data.std),
            "give both, with one value per channel",
        )
        require(all(s > 0 for s in c.data.std or ()), "data.std", c.data.std, "every value must be > 0")
    require(
        c.data.decode != "gpu" or not c.data.randaugment,
        "data.decode",
        c.data.decode,
        "the batched decode has no RandAugment; use data.decode=cpu (or auto) with data.randaugment=true",
    )
    require(
        c.data.verify or not c.data.skip_corrupt,
        "data.skip_corrupt",
        c.data.skip_corrupt,
        "needs data.verify=true, the check that finds the unreadable files",
    )


def _check_model_and_optimiser(c: DictConfig | Config) -> None:
    """The value checks of ``model.*``, ``optim.*`` and ``sched.*`` (:func:`check_values` runs them in this order)."""
    require(c.model.width is None or c.model.width >= 1, "model.width", c.model.width, "must be >= 1 or null")
    require(math.isfinite(c.optim.lr) and c.optim.lr > 0, "optim.lr", c.optim.lr, "must be > 0 and finite")
    require(0 <= c.optim.momentum < 1, "optim.momentum", c.optim.momentum, "must be in [0, 1)")
    require(
        not c.optim.nesterov or c.optim.momentum > 0,
        "optim.nesterov",
        c.optim.nesterov,
        "Nesterov momentum needs optim.momentum > 0",
    )
    require(
        math.isfinite(c.optim.weight_decay) and c.optim.weight_decay >= 0,
        "optim.weight_decay",
        c.optim.weight_decay,
        "must be >= 0 and finite",
    )
    require(c.optim.scalar_lr_mult > 0, "optim.scalar_lr_mult", c.optim.scalar_lr_mult, "must be > 0")
    require(c.optim.clip_grad_norm >= 0, "optim.clip_grad_norm", c.optim.clip_grad_norm, "must be >= 0 (0 = off)")
    require(c.optim.agc >= 0, "optim.agc", c.optim.agc, "must be >= 0 (0 = off)")
    require(
        not (c.optim.agc > 0 and c.optim.clip_grad_norm > 0),
        "optim.agc",
        c.optim.agc,
        "use either optim.agc or optim.clip_grad_norm, not both",
    )
    require(c.sched.warmup_epochs >= 0, "sched.warmup_epochs", c.sched.warmup_epochs, "must be >= 0")
    require(
        c.sched.warmup_epochs < c.trainer.epochs or c.sched.warmup_epochs == 0,
        "sched.warmup_epochs",
        c.sched.warmup_epochs,
        f"must be shorter than trainer.epochs={c.trainer.epochs}",
    )
    require(c.sched.min_lr >= 0, "sched.min_lr", c.sched.min_lr, "must be >= 0")
    require(0 < c.sched.gamma <= 1, "sched.gamma", c.sched.gamma, "must be in (0, 1]")
    require(
        list(c.sched.milestones) == sorted(set(c.sched.milestones)) and all(m > 0 for m in c.sched.milestones),
        "sched.milestones",
        list(c.sched.milestones),
        "must be increasing positive epochs",
    )


def _check_trainer(c: DictConfig | Config) -> None:
    """The value checks of ``trainer.*`` (:func:`check_values` runs them in this order)."""
    require(c.trainer.epochs >= 1, "trainer.epochs", c.trainer.epochs, "must be >= 1")
    require(
        c.trainer.compile_mode is None or c.trainer.compile_mode in COMPILE_MODES,
        "trainer.compile_mode",
        c.trainer.compile_mode,
        f"choose null or one of {', '.join(COMPILE_MODES)}",
    )
    require(
        c.trainer.compile_mode is None or c.trainer.compile,
        "trainer.compile_mode",
        c.trainer.compile_mode,
        "applies with trainer.compile=true only",
    )
    if c.trainer.cuda_graph:  # the device is checked where it resolves: nfbench.engine.graph.check_device
        t = c.trainer
        for refused, setting, why in (
            (
                t.precision == "fp16",
                "trainer.precision=fp16",
                "fp16's GradScaler reads its overflow flag on the host; use bf16 or fp32",
            ),
            (
                t.mixup_alpha > 0 or t.cutmix_alpha > 0,
                f"trainer.mixup_alpha={t.mixup_alpha}/cutmix_alpha={t.cutmix_alpha}",
                "mixup and CutMix draw on the host; set both to 0",
            ),
            (t.compile, "trainer.compile=true", "torch.compile makes its own graphs; choose one of the two"),
            (t.devices > 1, f"trainer.devices={t.devices}", "DDP is not captured; set trainer.devices=1"),
        ):
            if refused:
                raise ConfigError(
                    f"trainer.cuda_graph=true cannot run with {setting}: {why} (or set trainer.cuda_graph=false)"
                )
    dev = c.trainer.device
    require(
        dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
        "trainer.device",
        dev,
        f"choose {DEVICES_HELP}",
    )
    require(
        0 <= c.trainer.label_smoothing < 1, "trainer.label_smoothing", c.trainer.label_smoothing, "must be in [0, 1)"
    )
    require(c.trainer.mixup_alpha >= 0, "trainer.mixup_alpha", c.trainer.mixup_alpha, "must be >= 0 (0 = off)")
    require(c.trainer.cutmix_alpha >= 0, "trainer.cutmix_alpha", c.trainer.cutmix_alpha, "must be >= 0 (0 = off)")
    require(c.trainer.log_every >= 1, "trainer.log_every", c.trainer.log_every, "must be >= 1")
    require(
        c.trainer.progress_every_s >= 0,
        "trainer.progress_every_s",
        c.trainer.progress_every_s,
        "must be >= 0 (seconds between plain progress lines; 0 = at every log step)",
    )
    require(c.trainer.devices >= 1, "trainer.devices", c.trainer.devices, "must be >= 1")
    require(
        c.trainer.checkpoint_every_steps >= 0,
        "trainer.checkpoint_every_steps",
        c.trainer.checkpoint_every_steps,
        "must be >= 0 (0 = only at epoch ends)",
    )
    require(c.trainer.log_spp_every >= 0, "trainer.log_spp_every", c.trainer.log_spp_every, "must be >= 0 (0 = off)")


def _check_spp_and_objective(c: DictConfig | Config) -> None:
    """The value checks of ``spp.*`` and ``optimized_metric`` (:func:`check_values` runs them in this order)."""
    require(c.spp.batch_size >= 1, "spp.batch_size", c.spp.batch_size, "must be >= 1")
    require(c.spp.seeds >= 1, "spp.seeds", c.spp.seeds, "must be >= 1")
    require(
        c.spp.labels != "data" or c.spp.input == "data",
        "spp.labels",
        c.spp.labels,
        "labels=data needs spp.input=data (Gaussian inputs have no labels)",
    )
    require(c.spp.image_size >= 1, "spp.image_size", c.spp.image_size, "must be >= 1")
    require(c.spp.in_chans >= 1, "spp.in_chans", c.spp.in_chans, "must be >= 1")
    # One class gives a constant loss, so every gradient is zero and the backward plot is empty.
    require(c.spp.num_classes >= 2, "spp.num_classes", c.spp.num_classes, "must be >= 2")
    require(len(c.spp.formats) >= 1, "spp.formats", [], f"a non-empty list from {', '.join(FigureFormat)}")
    require(
        c.data.val_size is not None or not optimized_metric(c).startswith(("val_", "best_val_")),
        "optimized_metric",
        c.optimized_metric,
        "needs a validation split: set data.val_size (e.g. 0.1)",
    )
