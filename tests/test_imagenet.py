"""data=imagenet on real ImageNet photographs (issue 26, item 1): an ImageFolder tree made from the 120 JPEGs of
../shared/data/imagenet-sample-120.tar.gz trains and evaluates through the real command with the standard
recipe, on both decode paths; grey, CMYK and PNG-named-JPEG files come out as torchvision's ImageFolder gives
them; a truncated file is named before training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.transforms import v2

from nfbench.data.sets import IMAGENET_MEAN, IMAGENET_STD
from nfbench.data.source import build_source
from tests.test_user_errors import refusal

CLASSES = 4


def image_mode(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


def imagenet_tree(files: list[Path], root: Path) -> Path:
    """An ImageFolder tree ROOT/{train,val}/c<k>/ of the sample's real photographs, none used twice: the sorted
    colour and the sorted grayscale photographs dealt out to 4 classes, each getting 7 train images (5 colour, 2
    grey) and 3 val images (2 colour, 1 grey): 40 of the 120.  train/ also gets the two odd kinds of file that
    ImageNet's training set holds: a CMYK JPEG (c0/, made with PIL from a 41st photograph) and a PNG saved under
    a .JPEG name (c1/, from a 42nd).  30 train and 12 val images; the classes are arbitrary, this is no accuracy."""
    colour = [f for f in files if image_mode(f) == "RGB"]
    grey = [f for f in files if image_mode(f) == "L"]
    for k in range(CLASSES):
        split = {
            "train": colour[5 * k : 5 * k + 5] + grey[2 * k : 2 * k + 2],
            "val": colour[20 + 2 * k : 22 + 2 * k] + grey[8 + k : 9 + k],
        }
        for name, part in split.items():
            (root / name / f"c{k}").mkdir(parents=True)
            for f in part:
                shutil.copy(f, root / name / f"c{k}" / f.name)
    with Image.open(colour[28]) as img:
        img.convert("CMYK").save(root / "train" / "c0" / f"{colour[28].stem}_cmyk.JPEG", "JPEG", quality=90)
    with Image.open(colour[29]) as img:
        img.save(root / "train" / "c1" / f"{colour[29].stem}_png.JPEG", "PNG")
    return root


@pytest.fixture(scope="module")
def tree(imagenet_sample, tmp_path_factory) -> Path:
    return imagenet_tree(imagenet_sample, tmp_path_factory.mktemp("imagenet-tree"))


def nfbench_train(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nfbench.cli", "train", *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# ResNet-18 at width 4 on 224 px crops: 30 training images in 2 steps of 15, the 12 val images in one batch.
RUN = [
    "data=imagenet",
    "model=resnet18",
    "model.width=4",
    "data.batch_size=15",
    "data.test_batch_size=12",
    "data.num_workers=2",
    "trainer.epochs=1",
    "trainer.progress=false",
    "logger=none",
    "trainer.device=cpu",
]


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_imagenet_trains_and_evaluates_through_the_command(tree, tmp_path, decode):
    """Both decode paths (gpu: the batched decode, here on the CPU device) train 2 steps over all 30 training
    files, the CMYK and the PNG among them, and evaluate the 12 val images."""
    out = nfbench_train(*RUN, f"data.root={tree}", f"data.decode={decode}", run_dir=tmp_path / "run")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs"] == 1 and np.isfinite(result["train_loss"])
    assert 0 <= result["test_top1"] <= 100 and result["test_top5"] == 100.0  # 4 classes: top-5 holds them all
    log = (tmp_path / "run" / "train.log").read_text()
    assert "30 train / 0 validation / 12 test images" in log
    assert f"data.decode={decode}: " in log
    if decode == "gpu":  # the PNG is decoded by PIL in its worker, and the log says so (CMYK likewise)
        assert "_png.JPEG is a PNG file" in log and "_cmyk.JPEG is a CMYK JPEG" in log


def test_grey_cmyk_and_png_files_come_out_as_torchvision_imagefolder_gives_them(make_cfg, tree):
    """The cpu path reads the tree with torchvision's ImageFolder, whose loader is PIL's convert("RGB"): every
    file, grey, CMYK and PNG included, is those RGB pixels, and the network sees exactly torchvision's
    standard recipe applied to them (RandomResizedCrop 224 + flip; Resize 256 + CenterCrop 224)."""
    src = build_source(make_cfg(["data=imagenet", f"data.root={tree}", "data.decode=cpu"]).data)
    ref = tvd.ImageFolder(str(tree / "train"))
    assert src.train.base.samples == ref.samples and len(ref) == 30
    kinds = set()
    for i, (path, _) in enumerate(ref.samples):
        with Image.open(path) as img:
            kinds.add((img.format, img.mode))
            expected = np.asarray(img.convert("RGB"))
        mine = src.train.base[i][0]
        assert mine.mode == "RGB" and np.array_equal(np.asarray(mine), expected), path
    assert kinds == {("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGB")}
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    recipe = {
        "train": v2.Compose(
            [v2.PILToTensor(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *normalise]
        ),
        "val": v2.Compose([v2.PILToTensor(), v2.Resize(256, antialias=True), v2.CenterCrop(224), *normalise]),
    }
    for split, ds in (("train", src.train), ("val", src.test)):
        folder = tvd.ImageFolder(str(tree / split))
        for i in range(len(folder)):
            torch.manual_seed(i)
            x, y = ds[i]
            torch.manual_seed(i)
            assert torch.equal(x, recipe[split](folder[i][0])) and y == folder[i][1], (split, i)
            assert x.shape == (3, 224, 224)


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_a_truncated_file_is_named_before_training(tree, tmp_path, decode):
    """The up-front check (data.verify) reads every file's end: a JPEG cut in half is one line naming it, and
    no run directory is left behind."""
    damaged = tmp_path / "data"
    shutil.copytree(tree, damaged)
    cut = sorted((damaged / "val" / "c2").iterdir())[0]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    message = refusal(nfbench_train(*RUN, f"data.root={damaged}", f"data.decode={decode}", run_dir=tmp_path / "run"))
    assert message.startswith(f"image {cut} cannot be read (") and "data.skip_corrupt=true" in message
    assert not (tmp_path / "run").exists()
