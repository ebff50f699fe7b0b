"""Issue 13, item 5: every mistake a user can fix ends a real `nfbench train` in one line on stderr,
shown once, exit code 2, no traceback, and leaves no run directory behind that the command made for
nothing; a refused run never changes a directory that was there before it."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

PREFIX = "nfbench: error: "
# As root, drop the capabilities that let root read any file, so a chmod 000 folder is unreadable.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def nfbench_train(*overrides: str, run_dir: Path, wrapper: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *wrapper,
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            *TINY,
            "trainer.epochs=1",
            *overrides,
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def refusal(out: subprocess.CompletedProcess) -> str:
    """The one line a refused command ends with: exit code 2, no traceback, the message shown once
    on the terminal (stdout and stderr together)."""
    shown = out.stdout + out.stderr
    assert out.returncode == 2, shown
    assert "Traceback" not in shown and "HYDRA_FULL_ERROR" not in shown, shown
    last = out.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(PREFIX), shown
    message = last[len(PREFIX) :]
    assert shown.count(message) == 1, shown
    return message


def write_foreign_cifar(root: Path) -> Path:
    """CIFAR-10's six batch files, each a pickle of another format (wrong keys)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"pixels": [1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:  # the release's own names: the batches are what is wrong
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    return folder / "data_batch_1"


def write_image_folder(root: Path, splits=("train", "test"), classes=("a", "b")) -> Path:
    from PIL import Image

    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / c / f"{i}.png")
    return root


def test_resume_path_that_does_not_exist(tmp_path):
    message = refusal(nfbench_train(f"trainer.resume={tmp_path / 'nope'}", run_dir=tmp_path / "run"))
    assert f"trainer.resume={tmp_path / 'nope'}" in message and "no checkpoint there" in message
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_as_resume(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(os.urandom(2000))
    message = refusal(nfbench_train(f"trainer.resume={bad}", run_dir=tmp_path / "run"))
    assert f"checkpoint {bad} cannot be read" in message and "trainer.resume" in message
    assert not (tmp_path / "run").exists() and bad.exists()


def test_foreign_checkpoint_as_resume(tmp_path):
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    out = nfbench_train(f"trainer.resume={foreign}", run_dir=tmp_path / "run")
    message = refusal(out)
    assert str(foreign) in message and "not an nfbench checkpoint" in message
    # Not an nfbench checkpoint, so not "an older nfbench's" either: no warning about its missing checksum.
    assert "checksum" not in out.stdout + out.stderr
    assert not (tmp_path / "run").exists()


def test_cifar_files_of_another_format(tmp_path):
    first = write_foreign_cifar(tmp_path / "data")
    message = refusal(
        nfbench_train("data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false", run_dir=tmp_path / "run")
    )
    assert str(first) in message and "not a CIFAR python batch" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout", ["root-is-a-file", "no-class-folders", "no-images"])
def test_image_folder_that_cannot_be_used(tmp_path, layout):
    root = tmp_path / "images"
    if layout == "root-is-a-file":
        root.write_text("not a folder")
    elif layout == "no-class-folders":
        (root / "train").mkdir(parents=True)
        (root / "test").mkdir()
    else:
        write_image_folder(root, classes=("a",))
        for f in (root / "train" / "a").iterdir():
            f.rename(f.with_suffix(".txt"))
    message = refusal(nfbench_train("data=imagefolder", f"data.root={root}", run_dir=tmp_path / "run"))
    assert str(root) in message and "data.download" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="root reads any file, and setpriv is not here to drop that capability",
)
@pytest.mark.parametrize("locked", [".", "train", "train/a"])
def test_image_folder_that_cannot_be_read(tmp_path, locked):
    root = write_image_folder(tmp_path / "images")
    (root / locked).chmod(0)
    try:
        message = refusal(
            nfbench_train("data=imagefolder", f"data.root={root}", run_dir=tmp_path / "run", wrapper=UNPRIVILEGED)
        )
    finally:
        (root / locked).chmod(0o755)
    assert str(root) in message and "data.download" not in message
    assert "permission" in message.lower() or "unreadable" in message.lower()
    assert not (tmp_path / "run").exists()


def test_config_error_is_shown_once_and_leaves_no_run_directory(tmp_path):
    run = tmp_path / "outputs" / "train" / "run"
    message = refusal(nfbench_train("optim.lr=-1", run_dir=run))
    assert message == "optim.lr=-1.0 is not allowed: must be > 0 and finite"
    # Hydra made the run directory and its parents for this command: all gone, tmp_path kept.
    assert tmp_path.exists() and not (tmp_path / "outputs").exists()


def test_config_error_does_not_import_torch(tmp_path):
    """A bad value is refused before torch (seconds to import) is loaded."""
    probe = (
        "import sys\nfrom nfbench.cli.main import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, "train", "optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and PREFIX + "optim.lr=-1.0" in out.stderr, out.stderr
    assert "torch imported: False" in out.stderr


def test_refused_resume_leaves_the_existing_run_intact(tmp_path):
    """A rerun of a finished run with another learning rate is refused; every file of the run
    (Hydra's .hydra/ included) is as it was; train.log may only gain lines."""
    run = tmp_path / "run"
    assert nfbench_train(run_dir=run).returncode == 0

    def files() -> dict[str, str]:
        return {
            str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "train.log"
        }

    before, log_before = files(), (run / "train.log").read_text()
    message = refusal(nfbench_train("optim.lr=0.5", run_dir=run))
    assert f"cannot resume {run / 'checkpoints' / 'last.pt'}" in message and "optim.lr" in message
    assert files() == before
    assert (run / "train.log").read_text().startswith(log_before)


@pytest.mark.parametrize("command, bad", [("spp", "spp.seeds=0"), ("summary", "model.width=0")])
def test_other_commands_refuse_the_same_way(tmp_path, command, bad):
    """Their job logs are spp.log and summary.log: a refused run leaves no directory either."""
    out = subprocess.run(
        [sys.executable, "-m", "nfbench.cli", command, bad, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refusal(out).startswith(f"{bad} is not allowed")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override,expected",
    [
        ("trainer.epochs=abc", ["trainer.epochs=abc", "could not be converted to Integer"]),
        ("model=foo", ["Could not find 'model/foo'", "resnet18, resnet20"]),
        ("trainer.epoch=3", ["trainer.epoch", "not in 'TrainerConfig'"]),
        ("trainer.precision=fp8", ["trainer.precision", "expected one of [fp32, bf16, fp16]"]),
        ("init.weights=xavier", ["init.weights", "expected one of [he_fanin, he_fanout, brock]"]),
        ("init.alpha=0.3", ["init.alpha is a key of init=nf only", "choose init=nf"]),
        ("model.depth=16", ["model.depth is a key of model=wrn only", "choose model=wrn"]),
        ("init.reference_block=true", ["init.reference_block is a key of init=fixup only"]),
    ],
)
def test_an_override_hydra_cannot_compose_is_one_line(tmp_path, override, expected):
    """A wrong type, an unknown option, an unknown key, a value outside a closed set or a key of another
    option than the one selected: Hydra's several lines and exit code 1 become nfbench's one line and
    exit code 2, the options listed in it; no run directory is made."""
    out = nfbench_train(override, run_dir=tmp_path / "run")
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    message = refusal(out)
    assert all(e in message for e in expected), message
    assert not (tmp_path / "run").exists()


def test_hydra_full_error_still_gives_the_whole_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nfbench.cli", "train", "trainer.epochs=abc", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert out.returncode == 1 and "Traceback" in out.stderr and "ConfigCompositionException" in out.stderr


@pytest.mark.parametrize(
    "override,key", [("+trainer.epoch=5", "trainer.epoch"), ("+init.alpha=0.1", "init.alpha"), ("+foo=1", "foo")]
)
def test_a_key_added_with_plus_that_nfbench_never_reads_is_refused(override, key, tmp_path):
    """`+key=value` makes Hydra add any key; a typo (`+trainer.epoch=5`) then trained the default budget in
    silence.  Now one line names the key, exit 2, and no run directory is left."""
    run_dir = tmp_path / "run"
    out = nfbench_train(override, "init=bn", run_dir=run_dir)
    assert refusal(out) == (
        f"{key}: not a key nfbench reads (a '+' override adds any key, and this one would be "
        "ignored); remove it, or see `nfbench train --help` for the keys"
    )
    assert not run_dir.exists()
