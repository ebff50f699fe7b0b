"""docs/extending.md's four recipes, run as written: each in a copy of the repository, its code blocks
applied to the files their first lines name (at most two files a recipe), its command run through the real
CLI, and what the recipe says you get checked (issue 24 item 5)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
TARGET = re.compile(r"^# (\S+) \((append|new file)\)\n")


@dataclass
class Recipe:
    title: str
    edits: list[tuple[str, str, str]] = field(default_factory=list)  # (path, mode, code)
    commands: list[str] = field(default_factory=list)


def recipes() -> dict[str, Recipe]:
    """The doc's recipes by their section title ("A new scheme", ...)."""
    found = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        recipe = Recipe(title)
        for lang, code in BLOCK.findall(section):
            target = TARGET.match(code)
            if target:
                recipe.edits.append((target.group(1), target.group(2), code[target.end() :]))
            elif lang == "bash":
                recipe.commands += [line for line in code.splitlines() if line.startswith("nfbench ")]
        found[title] = recipe
    return found


def extending_commands() -> set[str]:
    """Every command of docs/extending.md (tests/test_docs_commands.py counts them as run here)."""
    return {c for r in recipes().values() for c in r.commands}


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory) -> Path:
    """The repository's files (tracked, and new ones not ignored), copied: the recipes change files of nfbench's own."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    (root / "nfbench" / "conf").symlink_to("../conf")  # nfbench.conf is conf/ (pyproject.toml's package-dir)
    return root


def apply(recipe: Recipe, root: Path) -> None:
    for rel, mode, code in recipe.edits:
        path = root / rel
        if mode == "new file":
            assert not path.exists(), f"{rel} exists already"
            path.write_text(code)
        else:
            path.write_text(path.read_text().rstrip("\n") + "\n\n\n" + code)


def run(command: str, root: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "nfbench.cli", *command.split()[1:], "trainer.progress=false"]
    out = subprocess.run(
        args,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def python(code: str, root: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_doc_holds_four_recipes_of_at_most_two_files_each():
    found = recipes()
    assert list(found) == ["A new scheme", "A new data set", "A new logger", "A new per-epoch hook"]
    for recipe in found.values():
        files = {rel for rel, _, _ in recipe.edits}
        assert 1 <= len(files) <= 2 and sum(rel.startswith("nfbench/") for rel in files) == 1, (recipe.title, files)
        assert len(recipe.commands) == 1, recipe.title


def test_a_new_scheme(copy_root):
    recipe = recipes()["A new scheme"]
    apply(recipe, copy_root)
    run(recipe.commands[0], copy_root)
    result = json.loads((copy_root / "outputs" / "idshort_zero" / "result.json").read_text())
    assert (result["status"], result["init"], result["weights"]) == ("finished", "idshort_zero", "he_fanout")
    listed = python(
        "import nfbench, torch; net = nfbench.create_model('resnet20', init='idshort_zero'); "
        "print(nfbench.list_schemes('idshort*'), all(not b.branch[-1].weight.any() for b in net.blocks), "
        "all(b.branch[0].weight.any() for b in net.blocks), net.blocks[0].scale)",
        copy_root,
    )
    assert listed.split() == ["['idshort',", "'idshort_zero']", "True", "True", f"{np.sqrt(0.5)}"]


def test_a_new_data_set(copy_root):
    from sklearn.datasets import load_digits

    recipe = recipes()["A new data set"]
    apply(recipe, copy_root)
    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]  # N x 8 x 8 x 1
    data = copy_root / "outputs" / "npz-data"
    data.mkdir(parents=True)
    np.savez(data / "train.npz", x=x[:300], y=digits.target[:300])
    np.savez(data / "test.npz", x=x[300:400], y=digits.target[300:400])
    run(recipe.commands[0], copy_root)
    result = json.loads((copy_root / "outputs" / "npz" / "result.json").read_text())
    assert (result["status"], result["data"]) == ("finished", "npz")
    import hashlib

    assert result["data_fingerprint"]["train"] == hashlib.sha256(np.ascontiguousarray(x[:300]).tobytes()).hexdigest()
    shape = python(
        "import nfbench\nfrom nfbench.config import DataConfig\nfrom nfbench.data.sets import data_shape\n"
        "print(data_shape(DataConfig(name='npz', root='outputs/npz-data')), 'npz' in nfbench.list_datasets())",
        copy_root,
    )
    assert shape.strip() == "DataShape(num_classes=10, in_chans=1, image_size=8) True"


def test_a_new_logger(copy_root):
    recipe = recipes()["A new logger"]
    apply(recipe, copy_root)
    run(recipe.commands[0], copy_root)
    run_dir = copy_root / "outputs" / "markdown"
    table = (run_dir / "metrics.md").read_text().splitlines()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert table[:2] == ["| epoch | train_loss | test_top1 |", "| --- | --- | --- |"]
    assert table[2:] == [f"| {r['epoch']} | {r['train_loss']} | {r['test_top1']} |" for r in rows] and len(rows) == 2
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))  # the other logger of the list too


def test_a_new_per_epoch_hook(copy_root):
    recipe = recipes()["A new per-epoch hook"]
    apply(recipe, copy_root)
    run(recipe.commands[0], copy_root)
    run_dir = copy_root / "outputs" / "scalars"
    lines = [json.loads(line) for line in (run_dir / "scalars.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    final = python(
        "import torch; s = torch.load('outputs/scalars/checkpoints/last.pt', weights_only=True)['model']; "
        "print([v.item() for k, v in s.items() if k.endswith('gate.weight')])",
        copy_root,
    )
    assert [gates[0] for gates in lines[-1]["blocks"]] == json.loads(final)  # SkipInit's gate, one per block
    assert any(g[0] != 0.0 for g in lines[0]["blocks"])  # the gates moved off their 0 in the first epoch
