"""``nfbench.load_run(RUN_DIR) -> (model, cfg)``: a trained network back from its run directory.

The network is rebuilt from the run's ``config.yaml`` through the scheme and model registries (the
data set's shape from :func:`nfbench.data.sets.data_shape`, without loading it) and given the selected
weights: ``checkpoints/model.safetensors`` for the best model (else best.pt's), or last.pt's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

from omegaconf import DictConfig, OmegaConf

import nfbench.rundir as rundir
from nfbench.config import typed

if TYPE_CHECKING:
    import torch
    from torch import nn

WHICH = ("best", "last")


def _weights(ckpt_dir: Path, which: str, allow_unverified: bool) -> Union[Path, dict]:
    """The weights ``which`` selects: a safetensors file, or a checkpoint's state dict."""
    if which == "best" and (ckpt_dir / rundir.WEIGHTS).exists():
        return ckpt_dir / rundir.WEIGHTS
    for name in (rundir.BEST, rundir.LAST) if which == "best" else (rundir.LAST,):
        if (ckpt_dir / name).exists():
            return rundir.load_checkpoint(ckpt_dir / name, allow_unverified=allow_unverified)["model"]
    raise FileNotFoundError(
        f"no {which} weights in {ckpt_dir}: looked for "
        f"{rundir.WEIGHTS + ', ' + rundir.BEST + ', ' if which == 'best' else ''}{rundir.LAST}"
    )


def load_run(
    run_dir: Union[str, Path],
    which: Literal["best", "last"] = "best",
    device: Union[str, "torch.device"] = "cpu",
    allow_unverified: bool = False,
) -> tuple["nn.Module", DictConfig]:
    """The network a run trained, in eval mode on ``device``, and the run's config.

    ``which="best"``: the selected model (``model.safetensors``, else best.pt, else last.pt, for a run
    that never improved on what it branched from); ``which="last"``: the end of the last epoch (last.pt).
    Every file is checked against the sha256 written beside it; a file without one is refused unless
    ``allow_unverified`` (then loaded with a warning).
    An image-folder run reads its first training image for the shape: ``cfg.data.root`` must exist.
    """
    from safetensors.torch import load_model

    from nfbench.data.sets import data_shape
    from nfbench.models import construct_model
    from nfbench.schemes import build_scheme

    if which not in WHICH:
        raise ValueError(f"which={which!r}; choose one of: {', '.join(WHICH)}")
    run_dir = Path(run_dir).expanduser()
    cfg = typed(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))  # type: ignore[arg-type]
    weights = _weights(run_dir / rundir.CHECKPOINTS, which, allow_unverified)
    shape = data_shape(cfg.data)
    net = construct_model(cfg.model, build_scheme(cfg.init), shape.num_classes, shape.in_chans, shape.image_size)
    if isinstance(weights, Path):
        rundir.verify_weights(weights, allow_unverified)
        load_model(net, weights, strict=True)
    else:
        net.load_state_dict(weights)
    return net.to(device).eval(), cfg
