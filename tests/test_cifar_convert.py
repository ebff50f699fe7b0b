"""scripts/cifar_from_images.py: image trees become CIFAR-10's or CIFAR-100's python release, bit for bit, in
sorted order, with CIFAR-100's published superclasses; every bad input is one line naming it; and
nfbench.data.fingerprint, the pixel digest the converter checks."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd

from nfbench.data.fingerprint import pixels_sha256
from nfbench.data.source import build_source

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "cifar_from_images.py"
LOSSLESS = REPO.parent / "shared" / "data" / "cifar10-lossless-webp.tar.gz"
# shared/data/README.md: the original CIFAR-10's pixel digests and training-set channel means.
LOSSLESS_SHA256 = (
    "61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b",
    "52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d",
)
LOSSLESS_MEAN = (0.49139968, 0.48215841, 0.44653091)


def load_script():
    spec = importlib.util.spec_from_file_location("cifar_from_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


conv = load_script()


def convert(source: Path, data_root: Path, *extra: str) -> subprocess.CompletedProcess:
    """The script as a user runs it: no PYTHONPATH, so it must find nfbench from its own checkout."""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(data_root), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def write_tree(root: Path, classes, per_split: dict[str, int], fmt: str = "webp", seed: int = 0):
    """An ImageFolder tree of random 32x32 images; file names are written in shuffled order.

    Returns split -> [(label, file name, HWC pixels decoded from the file)] in sorted (class, name) order."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in per_split.items():
        rows = []
        for label, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for k in rng.permutation(n):
                name = f"{cls}_s_{k:06d}.{fmt}"
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                path = root / split / cls / name
                if fmt == "webp":
                    Image.fromarray(pixels).save(path, "WEBP", lossless=True)
                else:
                    Image.fromarray(pixels).save(path, fmt.upper())
                decoded = np.asarray(Image.open(path).convert("RGB"))
                if fmt != "jpeg":  # lossless formats: the file holds exactly these pixels
                    assert np.array_equal(decoded, pixels)
                rows.append((label, name, decoded))
        expected[split] = sorted(rows, key=lambda r: (r[0], r[1]))
    return expected


def as_tarball(root: Path, tarball: Path, top: str) -> Path:
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname=top)
    return tarball


def sha256_of(rows) -> str:
    """The README's digest, computed without nfbench: HWC uint8 images stacked in stored order."""
    return hashlib.sha256(np.stack([pixels for _, _, pixels in rows]).tobytes()).hexdigest()


def chw(rows) -> torch.Tensor:
    return torch.from_numpy(np.stack([pixels for _, _, pixels in rows])).permute(0, 3, 1, 2)


def unverified(cls: type) -> type:
    """torchvision's CIFAR reader ``cls`` with its md5 checks off. It compares every file with the official
    release's md5 and refuses anything else, so files written here are read only this way: the reading
    code is torchvision's unchanged, only the md5s are None (check_integrity(path, None): the file exists)."""
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def one_line_refusal(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifar_from_images: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


# --- CIFAR-100's superclass table -------------------------------------------------------------------------------


def test_cifar100_table_is_the_published_one():
    table = conv.CIFAR100_SUPERCLASSES
    assert len(table) == 20 and all(len(set(fine)) == 5 for fine in table.values())
    fine = [c for classes in table.values() for c in classes]
    assert len(fine) == len(set(fine)) == 100
    assert conv.COARSE_NAMES == (
        "aquatic_mammals",
        "fish",
        "flowers",
        "food_containers",
        "fruit_and_vegetables",
        "household_electrical_devices",
        "household_furniture",
        "insects",
        "large_carnivores",
        "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes",
        "large_omnivores_and_herbivores",
        "medium_mammals",
        "non-insect_invertebrates",
        "people",
        "reptiles",
        "small_mammals",
        "trees",
        "vehicles_1",
        "vehicles_2",
    )
    assert conv.CIFAR100_CLASSES[:10] == (
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
    )
    assert conv.CIFAR100_CLASSES[-3:] == ("wolf", "woman", "worm")
    by_hand = {
        "apple": "fruit_and_vegetables",
        "aquarium_fish": "fish",
        "maple_tree": "trees",
        "lawn_mower": "vehicles_2",
        "pickup_truck": "vehicles_1",
        "keyboard": "household_electrical_devices",
        "possum": "medium_mammals",
        "crab": "non-insect_invertebrates",
        "whale": "aquatic_mammals",
    }
    for name, superclass in by_hand.items():
        assert conv.COARSE_NAMES[conv.COARSE_OF[name]] == superclass
    assert not set(conv.CIFAR10_CLASSES) & set(conv.CIFAR100_CLASSES)  # what lets the converter tell them apart


# --- round trips ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, packed", [("webp", False), ("png", True), ("jpeg", False)])
def test_cifar10_round_trip_is_bit_exact_in_sorted_order(make_cfg, tmp_path, fmt, packed):
    """Lossless WebP and PNG files come back pixel for pixel (JPEG as PIL decodes it), classes in sorted order,
    file names sorted within a class; from a tree or from its tar.gz under one top folder."""
    expected = write_tree(tmp_path / "tree", conv.CIFAR10_CLASSES, {"train": 3, "test": 2}, fmt)
    source = as_tarball(tmp_path / "tree", tmp_path / "c10.tar.gz", "cifar10-x") if packed else tmp_path / "tree"
    out = convert(source, tmp_path / "data")
    assert out.returncode == 0, out.stderr
    assert f"train {sha256_of(expected['train'])} test {sha256_of(expected['test'])}" in out.stdout

    src = build_source(make_cfg(["data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false"]).data)
    for split, ds in (("train", src.train), ("test", src.test)):
        assert torch.equal(ds.images, chw(expected[split]))
        assert ds.labels.tolist() == [label for label, _, _ in expected[split]] == sorted(ds.labels.tolist())

    folder = tmp_path / "data" / "cifar-10-batches-py"
    batches = [pickle.load(open(folder / f"data_batch_{i}", "rb"), encoding="latin1") for i in range(1, 6)]
    assert [len(b["labels"]) for b in batches] == [6] * 5  # consecutive fifths: no interleaving
    assert sum((b["filenames"] for b in batches), []) == [name for _, name, _ in expected["train"]]
    assert batches[0]["batch_label"] == "training batch 1 of 5" and batches[0]["data"].shape == (6, 3072)
    assert batches[0]["data"].dtype == np.uint8
    # The release's row layout, by hand: channel c, row h, column w at c * 1024 + h * 32 + w.
    first = expected["train"][0][2]
    assert batches[0]["data"][0, 1024 + 5 * 32 + 7] == first[5, 7, 1]
    meta = pickle.load(open(folder / "batches.meta", "rb"), encoding="latin1")
    assert meta["label_names"] == list(conv.CIFAR10_CLASSES) and meta["num_vis"] == 3072

    # torchvision refuses files that are not the official release's bytes (md5 of each file) ...
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        tvd.CIFAR10(tmp_path / "data", train=True, download=False)
    # ... and, that check aside, its own reader reads the same pixels, labels and class names.
    for train, split in ((True, "train"), (False, "test")):
        ds = unverified(tvd.CIFAR10)(tmp_path / "data", train=train, download=False)
        assert np.array_equal(ds.data, np.stack([p for _, _, p in expected[split]]))
        assert ds.targets == [label for label, _, _ in expected[split]]
        assert ds.classes == list(conv.CIFAR10_CLASSES)


def test_cifar100_fine_and_coarse_labels(make_cfg, tmp_path):
    """All 100 class folders, one image each: inferred as CIFAR-100 (no --dataset), fine labels in sorted
    order, coarse labels from the published table, read back by nfbench and torchvision."""
    expected = write_tree(tmp_path / "tree", conv.CIFAR100_CLASSES, {"train": 1, "test": 1}, "png")
    out = convert(tmp_path / "tree", tmp_path / "data")
    assert out.returncode == 0, out.stderr
    assert "CIFAR-100" in out.stdout

    folder = tmp_path / "data" / "cifar-100-python"
    meta = pickle.load(open(folder / "meta", "rb"), encoding="latin1")
    assert meta == {"fine_label_names": list(conv.CIFAR100_CLASSES), "coarse_label_names": list(conv.COARSE_NAMES)}
    train = pickle.load(open(folder / "train", "rb"), encoding="latin1")
    assert set(train) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    assert train["fine_labels"] == list(range(100)) and train["batch_label"] == "training batch 1 of 1"
    names = meta["fine_label_names"]
    coarse = {names[f]: meta["coarse_label_names"][c] for f, c in zip(train["fine_labels"], train["coarse_labels"])}
    assert (coarse["apple"], coarse["tulip"], coarse["willow_tree"], coarse["tractor"]) == (
        "fruit_and_vegetables",
        "flowers",
        "trees",
        "vehicles_2",
    )
    assert all(coarse[c] == s for s, fine in conv.CIFAR100_SUPERCLASSES.items() for c in fine)

    src = build_source(make_cfg(["data=cifar100", f"data.root={tmp_path / 'data'}", "data.download=false"]).data)
    assert src.num_classes == 100
    for split, ds in (("train", src.train), ("test", src.test)):
        assert torch.equal(ds.images, chw(expected[split])) and ds.labels.tolist() == list(range(100))
    ds = unverified(tvd.CIFAR100)(tmp_path / "data", train=False, download=False)
    assert np.array_equal(ds.data, np.stack([p for _, _, p in expected["test"]])) and ds.classes == names


def test_expect_sha256_accepts_the_right_digests(tmp_path):
    expected = write_tree(tmp_path / "tree", conv.CIFAR10_CLASSES, {"train": 1, "test": 1})
    out = convert(
        tmp_path / "tree",
        tmp_path / "data",
        "--expect-sha256",
        sha256_of(expected["train"]),
        sha256_of(expected["test"]),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").is_file()


# --- refusals ---------------------------------------------------------------------------------------------------


def _wrong_size(tree: Path) -> tuple[list[str], str]:
    path = tree / "train" / "cat" / "big.png"
    Image.new("RGB", (32, 31)).save(path)
    return [], f"{path}: 32x31 pixels, not a 32x32"


def _unreadable(tree: Path) -> tuple[list[str], str]:
    path = tree / "test" / "dog" / "broken.webp"
    path.write_bytes(b"RIFF\x00\x00 not really an image")
    return [], f"{path}: cannot be decoded as an image"


def _missing_class(tree: Path) -> tuple[list[str], str]:
    shutil.rmtree(tree / "test" / "truck")
    return [], f"{tree / 'test'}: no folder of images for CIFAR-10 class(es) truck"


def _extra_class(tree: Path) -> tuple[list[str], str]:
    (tree / "train" / "unicorn").mkdir()
    Image.new("RGB", (32, 32)).save(tree / "train" / "unicorn" / "u.png")
    return [], f"{tree / 'train' / 'unicorn'}: not one of CIFAR-10's 10 classes"


def _empty_split(tree: Path) -> tuple[list[str], str]:
    shutil.rmtree(tree / "test")
    return [], f"{tree / 'test'}: no images"


def _sha_mismatch(tree: Path) -> tuple[list[str], str]:
    return ["--expect-sha256", "0" * 64, "f" * 64], f"expected train {'0' * 64} test {'f' * 64}, got train "


def _neither_data_set(tree: Path) -> tuple[list[str], str]:
    for split in ("train", "test"):
        for i, folder in enumerate(sorted((tree / split).iterdir())):
            folder.rename(tree / split / str(i))
    return [], f"{tree / 'train'}: its class folders are named as neither"


@pytest.mark.parametrize(
    "damage", [_wrong_size, _unreadable, _missing_class, _extra_class, _empty_split, _sha_mismatch, _neither_data_set]
)
def test_bad_input_is_one_line_naming_it_and_writes_nothing(tmp_path, damage):
    tree = tmp_path / "tree"
    write_tree(tree, conv.CIFAR10_CLASSES, {"train": 2, "test": 1})
    args, message = damage(tree)
    line = one_line_refusal(convert(tree, tmp_path / "data", *args))
    assert message in line
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_bad_file_in_a_tarball_is_named_by_its_member_path(tmp_path):
    tree = tmp_path / "tree"
    write_tree(tree, conv.CIFAR10_CLASSES, {"train": 1, "test": 1})
    Image.new("RGB", (28, 28)).save(tree / "test" / "ship" / "small.png")
    tarball = as_tarball(tree, tmp_path / "c10.tar.gz", "cifar10-x")
    line = one_line_refusal(convert(tarball, tmp_path / "data"))
    assert f"cifar10-x/test/ship/small.png in {tarball}: 28x28 pixels" in line


def test_an_existing_release_is_not_replaced(tmp_path):
    write_tree(tmp_path / "tree", conv.CIFAR10_CLASSES, {"train": 1, "test": 1})
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    line = one_line_refusal(convert(tmp_path / "tree", tmp_path / "data"))
    assert f"{tmp_path / 'data' / 'cifar-10-batches-py'}: already exists" in line


def test_a_failed_write_leaves_no_folder(tmp_path):
    """Only a complete release gets the name data=cifar10 looks for; a partial one is removed."""

    def fail_halfway(folder: Path, splits) -> list[str]:
        (folder / "data_batch_1").write_bytes(b"half")
        raise OSError("disk full")

    release = conv.Release("CIFAR-10", "cifar-10-batches-py", conv.CIFAR10_CLASSES, fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        conv.write_release(tmp_path, release, {})
    assert list(tmp_path.iterdir()) == []


# --- the fingerprint --------------------------------------------------------------------------------------------


def test_pixels_sha256_hashes_hwc_bytes_whatever_the_layout():
    hwc = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    want = hashlib.sha256(hwc.tobytes()).hexdigest()
    as_chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    assert pixels_sha256(as_chw) == pixels_sha256(hwc.transpose(0, 3, 1, 2)) == want
    assert pixels_sha256(torch.from_numpy(as_chw)) == want
    assert pixels_sha256(as_chw[::-1].copy()) != want  # order counts
    with pytest.raises(ValueError, match="uint8 images"):
        pixels_sha256(as_chw.astype(np.float32))


@pytest.mark.slow
def test_real_lossless_cifar10_has_the_readme_digests_and_means(make_cfg, tmp_path):
    """The original CIFAR-10 pixels (shared/data): the README's two digests and CIFAR-10's channel means."""
    if not LOSSLESS.exists():
        pytest.skip(f"the lossless CIFAR-10 tarball is not at {LOSSLESS}")
    out = convert(LOSSLESS, tmp_path, "--expect-sha256", *LOSSLESS_SHA256)
    assert out.returncode == 0, out.stderr
    src = build_source(make_cfg(["data=cifar10", f"data.root={tmp_path}", "data.download=false"]).data)
    assert (len(src.train), len(src.test)) == (50000, 10000)
    assert pixels_sha256(src.train.images) == LOSSLESS_SHA256[0]
    mean = (src.train.images.double() / 255).mean(dim=(0, 2, 3))
    assert np.allclose(mean.numpy(), LOSSLESS_MEAN, atol=1e-6)


def test_a_run_records_the_fingerprint_of_the_pixels_it_loaded(make_cfg, tmp_path, monkeypatch):
    """Issue 20 item 2: result.json and env.json carry the sha256 of the uint8 arrays as loaded, train and
    test, in stored order and before any split: for converted files the digest the converter checks
    (computed here without nfbench), so the lossless tree gives the data README's two values. A resume
    on other pixels (same shapes, same classes) is refused."""
    import json

    from nfbench.engine.loop import train
    from tests.test_train import train_killed_after

    expected = write_tree(tmp_path / "tree", conv.CIFAR10_CLASSES, {"train": 3, "test": 1})
    assert convert(tmp_path / "tree", tmp_path / "data").returncode == 0
    cfg = [
        "data=cifar10",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "data.val_size=10",
        "data.batch_size=10",
        "model=resnet20",
        "model.width=4",
        "trainer.epochs=2",
        "trainer.progress=false",
    ]
    run = tmp_path / "run"
    train_killed_after(1, make_cfg(cfg, run), monkeypatch)
    digests = {"kind": "pixels", "train": sha256_of(expected["train"]), "test": sha256_of(expected["test"])}
    assert json.loads((run / "env.json").read_text())["data_fingerprint"] == digests
    other = write_tree(tmp_path / "other", conv.CIFAR10_CLASSES, {"train": 3, "test": 1}, seed=1)
    assert sha256_of(other["train"]) != digests["train"]
    assert convert(tmp_path / "other", tmp_path / "data2").returncode == 0
    from nfbench.errors import ConfigError

    with pytest.raises(ConfigError, match="trained on other data .*fingerprint"):
        train(make_cfg([*cfg, f"data.root={tmp_path / 'data2'}"], run))
    assert train(make_cfg(cfg, run))["data_fingerprint"] == digests
    assert json.loads((run / "result.json").read_text())["data_fingerprint"] == digests
