"""Typed configuration: the schema behind every file in ``conf/``.

Hydra merges the YAML group files into these dataclasses, so a wrong *type*
(``trainer.epochs=abc``) or an unknown key fails at composition.  Values that
are well typed but impossible (``optim.lr=-1``) are caught by :func:`check_values`
and names by the registries, both through :func:`nfbench.validation.validate`, which every entry
point calls before doing any work.  This module imports nothing else of nfbench's but its errors.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from nfbench.errors import ConfigError


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
    # there in batches (nfbench/device_data.py): true, false or "auto" (whenever the data set allows it).
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
    # A validation split held out of the training set for model selection, evaluated every epoch beside the
    # test set with the test transform; checkpoints/best.pt and result.json's best figures are selected on it.
    # null: none (best.pt is then selected on the test set, an optimistic figure); an int: that many
    # images; a float in (0, 1): that fraction of the training set, rounded to the nearest image.
    # Per class where labels are known (in-memory sets, image folders), from a permutation seeded by
    # nfbench.data.SPLIT_SEED, not the run's seed: every run of a sweep holds out the same images.
    # It is taken first, from the whole training set; data.train_subset then subsets the rest.
    val_size: Any = None
    # Optional subsets (first N of a seeded permutation) for quick experiments and tests.
    train_subset: Optional[int] = None  # train on the first N of a fixed permutation (null: all)
    test_subset: Optional[int] = None  # evaluate on the first N of a fixed permutation (null: all)
    mean: Optional[list[float]] = None  # per-channel normalisation mean (null: the data set's own)
    std: Optional[list[float]] = None  # per-channel normalisation std (null: the data set's own)
    # Image folders: check every file's header and end before training (nfbench/datacheck.py; about
    # 25 us a file), refusing a damaged one by name; skip_corrupt drops such files and counts them.
    verify: bool = True
    skip_corrupt: bool = False  # with verify, train without the unreadable files (counted in the log)


@dataclass
class ModelConfig:
    """The network (conf/model/)."""

    name: str = "resnet20"  # the architecture: resnet18-152, resnet20-110 (CIFAR), wrn, nf_resnet26-101
    # Stage-1 width; None keeps the published widths (64 or 16).
    width: Optional[int] = None
    # "auto" picks the stem from the image size: CIFAR (<= 64 px) or ImageNet.
    stem: str = "auto"
    # model=wrn only: depth d = 6n + 4 and widen factor k of WRN-d-k (null: WRN-28-10).
    depth: Optional[int] = None
    widen: Optional[int] = None  # model=wrn only: widen factor k of WRN-d-k (null: 10)


@dataclass
class InitConfig:
    """The initialisation scheme, the axis under study (conf/init/)."""

    name: str = "convshort"  # the scheme: bn, convshort, fixup, idshort, learnscalar, nf, plain, rezero, ...
    # he_fanin | he_fanout | brock; None takes the scheme's default (SPEC section 2).
    weights: Optional[str] = None
    # The stem conv's rule alone, where the rules differ most (3 raw input channels): he_fanin | he_fanout |
    # brock; null: init.weights' rule, as every other conv.  Per unit input variance the CIFAR stem
    # (3x3, 3 -> 16) sends Var 2.0 (he_fanin), 0.375 (he_fanout) or 2.93 (brock) on (docs/schemes.md).
    stem_weights: Optional[str] = None
    # Civitelli et al.: empirical standardisation to the target mean/variance after sampling.
    standardize: bool = True
    # init=fixup only: hongyi-zhang/Fixup's post-activation CIFAR block (option-A shortcut).
    reference_block: bool = False
    # init=bn only: a 1x1 conv shortcut in every block (ConvShort's network with BatchNorm), the baseline
    # whose parameter counts Civitelli et al. Tables 1-2 print as "BatchNorm".
    conv_shortcut: bool = False
    # init=nf only: the branch weight alpha and the skip gain's initial value (null: 0.2 and 0).
    alpha: Optional[float] = None
    skip_gain: Optional[float] = None  # init=nf only: the skip gain's initial value (null: 0)


@dataclass
class OptimConfig:
    """The optimiser (conf/optim/)."""

    name: str = "sgd"  # the optimiser: sgd
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

    name: str = "cosine"  # the schedule: cosine, multistep, constant
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
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast)
    channels_last: bool = False  # channels-last memory format for the network and its inputs
    compile: bool = False  # torch.compile the network
    # torch.compile's mode when trainer.compile=true: null (torch's default), reduce-overhead (CUDA graphs:
    # for launch-bound small networks on a GPU), max-autotune, max-autotune-no-cudagraphs.
    compile_mode: Optional[str] = None
    # Capture the whole training step (forward, loss, backward, clipping, SGD, the epoch metrics' sums) once
    # in a CUDA graph and replay it per batch (nfbench/graphed_step.py): for launch-bound small networks on a
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
    """Signal propagation plots, ``nfbench spp`` (SPEC section 3; Civitelli et al. Fig. 2)."""

    batch_size: int = 32  # images per measured batch
    # Independent repeats (network, inputs, labels); the plot shows their mean and min-max band.
    seeds: int = 1
    # gaussian: unit Gaussian inputs; data: a batch of the configured data set's test images.
    input: str = "gaussian"
    # random: uniform random labels; data: the batch's own labels (input=data only).
    labels: str = "random"
    # Gaussian input shape and class count: CIFAR-10's, the paper's setting (Civitelli et al. Table 1).
    image_size: int = 32
    in_chans: int = 3  # Gaussian inputs' channels
    num_classes: int = 10  # classes of the network's head (input=gaussian)
    formats: list[str] = field(default_factory=lambda: ["png"])  # figure files: png, pdf, svg


@dataclass
class TensorBoardLoggerConfig:
    """logger=tensorboard: TensorBoard event files, hyperparameters included."""

    # Folder of the event files, inside the run directory.
    dir: str = "tb"


@dataclass
class CsvLoggerConfig:
    """logger=csv: a CSV table of the per-epoch metrics."""

    # The per-epoch table (metrics.jsonl's columns), inside the run directory.
    file: str = "metrics.csv"


@dataclass
class WandbLoggerConfig:
    """logger=wandb: Weights & Biases (pip install 'nfbench[wandb]')."""

    project: str = "nfbench"  # wandb project
    entity: Optional[str] = None  # wandb entity (user or team; null: your default)
    group: Optional[str] = None  # wandb group, e.g. one sweep
    # Null: the run directory's name.
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)  # wandb tags
    # online, offline or disabled; null: wandb's own choice (the WANDB_MODE variable, else online).
    mode: Optional[str] = None


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl (conf/logger/): each selected option fills its key,
    ``logger=[tensorboard,csv]`` selects several, ``logger=none`` none."""

    tensorboard: Optional[TensorBoardLoggerConfig] = None
    csv: Optional[CsvLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0  # seeds the network's initialisation, the data order and the augmentation
    # Free-form tag that experiment presets set; shows up in result.json.
    experiment: Optional[str] = None
    # The final figure `nfbench train` returns to a sweeper (Hydra's Optuna sweeper, direction
    # maximize; lightning-hydra-template's optimized_metric): one of OPTIMIZED_METRICS, a top-1 or top-5
    # in percent from result.json.  null: val_top1 when data.val_size holds out a validation split, else
    # test_top1, which tunes on the test set: for quick looks only, never a result to report.  A run
    # that diverged, an invalid point or a missing figure returns 0.0, below any run that learned.
    optimized_metric: Optional[str] = None


def optimized_metric(cfg: DictConfig | Config) -> str:
    """The result.json key a sweeper optimises: ``optimized_metric``, else the validation top-1 once
    ``data.val_size`` holds out a validation split, else the test top-1."""
    if cfg.optimized_metric is not None:
        return cfg.optimized_metric
    return "test_top1" if cfg.data.val_size is None else "val_top1"


def tasks_per_node(gpus_per_node: int) -> int:
    """conf/hydra/launcher/slurm.yaml: one task (DDP rank) per GPU, so a job needs at least one GPU."""
    require(gpus_per_node >= 1, "hydra.launcher.gpus_per_node", gpus_per_node,
            "must be >= 1 (one task per GPU); for a CPU-only job also set hydra.launcher.tasks_per_node=N")
    return gpus_per_node


def register_configs() -> None:
    """Put the schema in Hydra's config store (conf/config.yaml names it first), and the resolver
    the SLURM launcher preset derives its tasks from."""
    ConfigStore.instance().store(name="nfbench_schema", node=Config)
    OmegaConf.register_new_resolver("nfbench.tasks_per_node", tasks_per_node, replace=True)


PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCHEDULES = ("cosine", "multistep", "constant")
SPP_INPUTS = ("gaussian", "data")
SPP_LABELS = ("random", "data")
SPP_FORMATS = ("png", "pdf", "svg")
WANDB_MODES = ("online", "offline", "disabled")
# Accuracies in percent, higher is better: train()'s result.json keys a sweeper may maximise.
OPTIMIZED_METRICS = ("val_top1", "val_top5", "best_val_top1", "test_top1", "test_top5")
DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """A ConfigError naming ``key``, its ``value`` and what is ``allowed``, unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def check_values(cfg: DictConfig | Config) -> None:
    """Fail on any value that cannot work, naming key and range: everything that needs no registry
    (and so no torch).  :func:`nfbench.validation.validate` runs these, then checks the names."""
    c = cfg
    require(c.data.batch_size >= 1, "data.batch_size", c.data.batch_size, "must be >= 1")
    require(c.data.test_batch_size >= 1, "data.test_batch_size", c.data.test_batch_size, "must be >= 1")
    require(c.data.num_workers >= 0, "data.num_workers", c.data.num_workers, "must be >= 0")
    require(isinstance(c.data.on_device, bool) or c.data.on_device == "auto", "data.on_device", c.data.on_device,
            "choose true, false or auto")
    require(c.data.in_memory_max_gb >= 0, "data.in_memory_max_gb", c.data.in_memory_max_gb,
            "must be >= 0 (0: image folders always read their files)")
    require(c.data.crop_padding >= 0, "data.crop_padding", c.data.crop_padding, "must be >= 0")
    require(c.data.randaugment_n >= 0, "data.randaugment_n", c.data.randaugment_n, "must be >= 0")
    require(0 <= c.data.randaugment_m <= 30, "data.randaugment_m", c.data.randaugment_m,
            "must be in [0, 30] (torchvision's magnitude bins)")
    v = c.data.val_size
    require(v is None or (type(v) is int and v >= 1) or (type(v) is float and 0 < v < 1), "data.val_size", v,
            "must be null, a number of images >= 1, or a fraction of the training set in (0, 1)")
    for key in ("train_subset", "test_subset", "image_size"):
        v = getattr(c.data, key)
        require(v is None or v >= 1, f"data.{key}", v, "must be >= 1 or null")
    if c.data.mean is not None or c.data.std is not None:
        require(c.data.mean is not None and c.data.std is not None and len(c.data.mean) == len(c.data.std),
                "data.mean/data.std", (c.data.mean, c.data.std), "give both, with one value per channel")
        require(all(s > 0 for s in c.data.std), "data.std", c.data.std, "every value must be > 0")
    require(c.data.verify or not c.data.skip_corrupt, "data.skip_corrupt", c.data.skip_corrupt,
            "needs data.verify=true, the check that finds the unreadable files")
    require(c.model.width is None or c.model.width >= 1, "model.width", c.model.width, "must be >= 1 or null")
    require(c.model.stem in ("auto", "cifar", "imagenet"), "model.stem", c.model.stem,
            "choose one of auto, cifar, imagenet")
    for key in ("depth", "widen"):
        v = getattr(c.model, key)
        require(v is None or c.model.name == "wrn", f"model.{key}", v, "applies to model=wrn only (set it to null)")
    require(c.model.depth is None or (c.model.depth >= 10 and (c.model.depth - 4) % 6 == 0), "model.depth",
            c.model.depth, "must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...)")
    require(c.model.widen is None or c.model.widen >= 1, "model.widen", c.model.widen, "must be >= 1 or null")
    require(not c.init.reference_block or c.init.name == "fixup", "init.reference_block", c.init.reference_block,
            "applies to init=fixup only")
    require(not c.init.conv_shortcut or c.init.name == "bn", "init.conv_shortcut", c.init.conv_shortcut,
            "applies to init=bn only (init=convshort has a conv shortcut in every block already)")
    for key in ("alpha", "skip_gain"):
        v = getattr(c.init, key)
        require(v is None or c.init.name == "nf", f"init.{key}", v, "applies to init=nf only (set it to null)")
    require(c.init.alpha is None or c.init.alpha > 0, "init.alpha", c.init.alpha, "must be > 0 or null")
    require(c.optim.name == "sgd", "optim.name", c.optim.name, "choose one of sgd")
    require(math.isfinite(c.optim.lr) and c.optim.lr > 0, "optim.lr", c.optim.lr, "must be > 0 and finite")
    require(0 <= c.optim.momentum < 1, "optim.momentum", c.optim.momentum, "must be in [0, 1)")
    require(not c.optim.nesterov or c.optim.momentum > 0, "optim.nesterov", c.optim.nesterov,
            "Nesterov momentum needs optim.momentum > 0")
    require(math.isfinite(c.optim.weight_decay) and c.optim.weight_decay >= 0, "optim.weight_decay",
            c.optim.weight_decay, "must be >= 0 and finite")
    require(c.optim.scalar_lr_mult > 0, "optim.scalar_lr_mult", c.optim.scalar_lr_mult, "must be > 0")
    require(c.optim.clip_grad_norm >= 0, "optim.clip_grad_norm", c.optim.clip_grad_norm, "must be >= 0 (0 = off)")
    require(c.optim.agc >= 0, "optim.agc", c.optim.agc, "must be >= 0 (0 = off)")
    require(not (c.optim.agc > 0 and c.optim.clip_grad_norm > 0), "optim.agc", c.optim.agc,
            "use either optim.agc or optim.clip_grad_norm, not both")
    require(c.sched.name in SCHEDULES, "sched.name", c.sched.name, f"choose one of {', '.join(SCHEDULES)}")
    require(c.sched.warmup_epochs >= 0, "sched.warmup_epochs", c.sched.warmup_epochs, "must be >= 0")
    require(c.sched.warmup_epochs < c.trainer.epochs or c.sched.warmup_epochs == 0, "sched.warmup_epochs",
            c.sched.warmup_epochs, f"must be shorter than trainer.epochs={c.trainer.epochs}")
    require(c.sched.min_lr >= 0, "sched.min_lr", c.sched.min_lr, "must be >= 0")
    require(0 < c.sched.gamma <= 1, "sched.gamma", c.sched.gamma, "must be in (0, 1]")
    require(list(c.sched.milestones) == sorted(set(c.sched.milestones)) and all(m > 0 for m in c.sched.milestones),
            "sched.milestones", list(c.sched.milestones), "must be increasing positive epochs")
    require(c.trainer.epochs >= 1, "trainer.epochs", c.trainer.epochs, "must be >= 1")
    require(c.trainer.precision in PRECISIONS, "trainer.precision", c.trainer.precision,
            f"choose one of {', '.join(PRECISIONS)}")
    require(c.trainer.compile_mode is None or c.trainer.compile_mode in COMPILE_MODES, "trainer.compile_mode",
            c.trainer.compile_mode, f"choose null or one of {', '.join(COMPILE_MODES)}")
    require(c.trainer.compile_mode is None or c.trainer.compile, "trainer.compile_mode", c.trainer.compile_mode,
            "applies with trainer.compile=true only")
    if c.trainer.cuda_graph:  # the device is checked where it resolves: nfbench.graphed_step.check_device
        t = c.trainer
        for bad, setting, why in (
                (t.precision == "fp16", "trainer.precision=fp16",
                 "fp16's GradScaler reads its overflow flag on the host; use bf16 or fp32"),
                (t.mixup_alpha > 0 or t.cutmix_alpha > 0, f"trainer.mixup_alpha={t.mixup_alpha}/cutmix_alpha="
                 f"{t.cutmix_alpha}", "mixup and CutMix draw on the host; set both to 0"),
                (t.compile, "trainer.compile=true", "torch.compile makes its own graphs; choose one of the two"),
                (t.devices > 1, f"trainer.devices={t.devices}", "DDP is not captured; set trainer.devices=1")):
            if bad:
                raise ConfigError(f"trainer.cuda_graph=true cannot run with {setting}: {why} "
                                  "(or set trainer.cuda_graph=false)")
    dev = c.trainer.device
    require(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
            "trainer.device", dev, f"choose {DEVICES_HELP}")
    require(0 <= c.trainer.label_smoothing < 1, "trainer.label_smoothing", c.trainer.label_smoothing,
            "must be in [0, 1)")
    require(c.trainer.mixup_alpha >= 0, "trainer.mixup_alpha", c.trainer.mixup_alpha, "must be >= 0 (0 = off)")
    require(c.trainer.cutmix_alpha >= 0, "trainer.cutmix_alpha", c.trainer.cutmix_alpha, "must be >= 0 (0 = off)")
    require(c.trainer.log_every >= 1, "trainer.log_every", c.trainer.log_every, "must be >= 1")
    require(c.trainer.progress_every_s >= 0, "trainer.progress_every_s", c.trainer.progress_every_s,
            "must be >= 0 (seconds between plain progress lines; 0 = at every log step)")
    require(c.trainer.devices >= 1, "trainer.devices", c.trainer.devices, "must be >= 1")
    require(c.trainer.checkpoint_every_steps >= 0, "trainer.checkpoint_every_steps", c.trainer.checkpoint_every_steps,
            "must be >= 0 (0 = only at epoch ends)")
    require(c.trainer.log_spp_every >= 0, "trainer.log_spp_every", c.trainer.log_spp_every, "must be >= 0 (0 = off)")
    require(c.spp.batch_size >= 1, "spp.batch_size", c.spp.batch_size, "must be >= 1")
    require(c.spp.seeds >= 1, "spp.seeds", c.spp.seeds, "must be >= 1")
    require(c.spp.input in SPP_INPUTS, "spp.input", c.spp.input, f"choose one of {', '.join(SPP_INPUTS)}")
    require(c.spp.labels in SPP_LABELS, "spp.labels", c.spp.labels, f"choose one of {', '.join(SPP_LABELS)}")
    require(c.spp.labels != "data" or c.spp.input == "data", "spp.labels", c.spp.labels,
            "labels=data needs spp.input=data (Gaussian inputs have no labels)")
    require(c.spp.image_size >= 1, "spp.image_size", c.spp.image_size, "must be >= 1")
    require(c.spp.in_chans >= 1, "spp.in_chans", c.spp.in_chans, "must be >= 1")
    # One class gives a constant loss, so every gradient is zero and the backward plot is empty.
    require(c.spp.num_classes >= 2, "spp.num_classes", c.spp.num_classes, "must be >= 2")
    require(len(c.spp.formats) >= 1 and all(f in SPP_FORMATS for f in c.spp.formats), "spp.formats",
            list(c.spp.formats), f"a non-empty list from {', '.join(SPP_FORMATS)}")
    require(c.optimized_metric is None or c.optimized_metric in OPTIMIZED_METRICS, "optimized_metric",
            c.optimized_metric, f"choose null or one of {', '.join(OPTIMIZED_METRICS)}")
    require(c.data.val_size is not None or not optimized_metric(c).startswith(("val_", "best_val_")),
            "optimized_metric", c.optimized_metric, "needs a validation split: set data.val_size (e.g. 0.1)")
    if c.logger.wandb is not None:
        require(c.logger.wandb.mode is None or c.logger.wandb.mode in WANDB_MODES, "logger.wandb.mode",
                c.logger.wandb.mode, f"choose null or one of {', '.join(WANDB_MODES)}")
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("logger=wandb needs the wandb package: pip install 'nfbench[wandb]' (or choose "
                              "logger=tensorboard, csv or none)")
