"""nfbench report: on a tree of run directories written here (finished, diverged and unfinished runs,
a multirun tree and a single run), the groups, means, stds and counts are the ones computed by hand;
the table files, the curves and the command line work; and it reads what train() really writes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nfbench.analysis import report as rep
from nfbench.cli.main import main as cli_main
from nfbench.data.fingerprint import KNOWN_COPIES
from nfbench.engine.loop import train
from tests.conftest import TINY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    path: Path,
    init: str,
    seed: int,
    test_top1: list[float],
    train_top1: list[float] | None = None,
    status: str | None = "finished",
    epochs: int = 3,
    weights: str | None = None,
    model: str = "resnet20",
    data: str = "cifar10",
    lr: float = 0.01,
    val_top1: list[float] | None = None,
    copy: str | None = None,
) -> Path:
    """A run directory as nfbench train writes it: config.yaml, env.json, metrics.jsonl and (unless the run
    is still going, status=None) result.json with the last epoch's numbers; with ``val_top1``, a run with a
    validation split (data.val_size), its best epoch selected on it; ``copy``: a known CIFAR-10 copy
    (nfbench.data.fingerprint.KNOWN_COPIES) whose fingerprint env.json and result.json record."""
    path.mkdir(parents=True)
    config = {
        "data": {"name": data, "root": f"/data/{seed}"},
        "model": {"name": model, "width": 8},
        "init": {"name": init, "weights": weights},
        "optim": {"lr": lr},
        "trainer": {"epochs": epochs, "run_dir": str(path)},
        "seed": seed,
        "experiment": "synthetic",
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    fingerprint = None
    if copy is not None:
        ((train, test),) = [k for k, label in KNOWN_COPIES.items() if label == copy]
        fingerprint = {"kind": "pixels", "train": train, "test": test}
    (path / "env.json").write_text(json.dumps({"data_fingerprint": fingerprint} if copy else {}))
    train_top1 = train_top1 or [t - 1.0 for t in test_top1]
    rows = [
        {
            "epoch": e,
            "lr": lr,
            "train_loss": 1.0,
            "train_top1": tr,
            "test_loss": 1.0,
            "test_top1": te,
            "test_top5": 99.0,
            "images_per_s": 1.0,
            "epoch_s": 1.0,
            "wall_s": 10.0 * e,
        }
        for e, (tr, te) in enumerate(zip(train_top1, test_top1), 1)
    ]
    for r, v in zip(rows, val_top1 or []):
        r.update({"val_loss": 1.0, "val_top1": v, "val_top5": 99.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status is not None:
        result = {
            "status": status,
            "divergence": None,
            "epochs": len(rows),
            "epochs_planned": epochs,
            "params": 1000,
            "data": data,
            "model": model,
            "init": init,
            "weights": weights or rep.resolved_weights(rep.Run(path, config, rows, None)),
            "seed": seed,
            "experiment": "synthetic",
            "best_test_top1": max(test_top1),
            "wall_s": 10.0 * len(rows),
            "test_top1": test_top1[-1],
            "test_top5": 99.0,
            "test_loss": 1.0,
            "train_loss": 1.0,
            "train_top1": train_top1[-1],
            "data_fingerprint": fingerprint,
        }
        if val_top1:
            best = max(rows, key=lambda r: r["val_top1"])
            result.update(
                {
                    "best_selected_on": "val_top1",
                    "best_val_top1": best["val_top1"],
                    "best_epoch": best["epoch"],
                    "test_top1_at_best_val": best["test_top1"],
                }
            )
            del result["best_test_top1"]
        (path / "result.json").write_text(json.dumps(result))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Three groups under a Hydra multirun tree (one subdir nested, as a data.root=/x/y override makes
    it), plus a single run elsewhere, plus a folder that is not a run:

    - idshort: 3 finished seeds, final test top-1 50, 52, 57; best 51, 53, 58 (best is not the last epoch);
    - convshort: 2 finished (60, 64) and 1 diverged (its numbers must not count);
    - bn: 1 finished (70, a single run elsewhere) and 1 unfinished (2 of 3 epochs, no result.json).
    """
    sweep = tmp_path / "multirun" / "2026-01-01_00-00-00"
    for seed, (last, best) in enumerate([(50.0, 51.0), (52.0, 53.0), (57.0, 58.0)]):
        write_run(sweep / f"{seed}_init=idshort,seed={seed}", "idshort", seed, [30.0, best, last])
    write_run(sweep / "3_data.root=" / "x" / "y,init=convshort,seed=0", "convshort", 0, [40.0, 55.0, 60.0])
    write_run(sweep / "4_init=convshort,seed=1", "convshort", 1, [41.0, 58.0, 64.0])
    write_run(sweep / "5_init=convshort,seed=2", "convshort", 2, [10.0], status="diverged")
    write_run(sweep / "6_init=bn,seed=1", "bn", 1, [45.0, 62.0], status=None)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("hello")
    write_run(tmp_path / "single" / "train" / "cifar10" / "resnet20-bn" / "2026-01-02", "bn", 0, [48.0, 66.0, 70.0])
    return tmp_path


def rows_by(table: pd.DataFrame, *keys: str) -> dict:
    """The table's rows (pandas Series) by their value of ``keys`` (a tuple of them for several)."""
    return {(row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys)): row for _, row in table.iterrows()}


def rows_by_init(table: pd.DataFrame) -> dict[str, pd.Series]:
    return rows_by(table, "init")


def only_row(table: pd.DataFrame) -> pd.Series:
    assert len(table) == 1, table
    return table.iloc[0]


def test_collect_finds_every_run_and_its_status(tree):
    runs = rep.collect([tree / "multirun", tree / "single"])
    assert len(runs) == 8
    assert sorted(r.status for r in runs) == ["diverged", *["finished"] * 6, "unfinished"]
    # The whole tree, the folder that is no run included, gives the same runs.
    assert sorted(r.path for r in rep.collect([tree])) == sorted(r.path for r in runs)


def test_groups_follow_the_sweeps_job_order(tmp_path):
    """Hydra's job numbers are not zero-padded; job 2 comes before job 10."""
    write_run(tmp_path / "10_init=bn", "bn", 0, [50.0])
    write_run(tmp_path / "2_init=plain", "plain", 0, [50.0])
    assert list(rep.aggregate(rep.collect([tmp_path]))["init"]) == ["plain", "bn"]


def test_run_with_only_hydras_config_is_read(tmp_path):
    """A job killed before it wrote config.yaml still has Hydra's unresolved .hydra/config.yaml."""
    run = write_run(tmp_path / "job", "idshort", 0, [20.0], status=None)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["trainer"]["run_dir"] = "${hydra:runtime.output_dir}"
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "config.yaml").unlink()
    (r,) = rep.collect([tmp_path])
    assert (r.status, r.get("init"), r.get("weights"), r.config["trainer"]["run_dir"]) == (
        "unfinished",
        "idshort",
        "he_fanout",
        "${hydra:runtime.output_dir}",
    )


def test_aggregate_means_stds_and_counts(tree):
    rows = rows_by_init(rep.aggregate(rep.collect([tree])))
    assert set(rows) == {"idshort", "convshort", "bn"}

    ids = rows["idshort"]
    assert (ids["seeds"], ids["diverged"], ids["unfinished"], ids["epochs"]) == (3, 0, 0, 3)
    # mean (50 + 52 + 57) / 3 = 53; sample std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    assert ids["final_test_top1_mean"] == pytest.approx(53.0)
    assert ids["final_test_top1_std"] == pytest.approx(math.sqrt(13.0))
    # no validation split: no best figure (the test-selected best is not a result)
    assert (
        ids[["best_val_top1_mean", "best_val_top1_std", "test_top1_at_best_val_mean", "test_top1_at_best_val_std"]]
        .isna()
        .all()
    )
    assert ids["final_train_top1_mean"] == pytest.approx(52.0)
    assert ids["wall_s_mean"] == pytest.approx(30.0)

    conv = rows["convshort"]
    assert (conv["seeds"], conv["diverged"], conv["unfinished"]) == (2, 1, 0)
    # the diverged seed (10%) is counted, not averaged: mean 62, std sqrt(4 + 4) = sqrt(8)
    assert conv["final_test_top1_mean"] == pytest.approx(62.0)
    assert conv["final_test_top1_std"] == pytest.approx(math.sqrt(8.0))
    assert conv["seed_values"] == [0, 1, 2]

    bn = rows["bn"]
    assert (bn["seeds"], bn["diverged"], bn["unfinished"]) == (1, 0, 1)
    # one finished run: its value, and no std; the unfinished run (weights null in its config)
    # lands in the same group through the scheme's default weights
    assert bn["final_test_top1_mean"] == pytest.approx(70.0) and pd.isna(bn["final_test_top1_std"])
    assert bn["weights"] == "he_fanin"
    assert all(not r["mixed_keys"] for r in rows.values())


def test_epoch_curves_leave_diverged_runs_out(tree):
    rows = rows_by_init(rep.aggregate(rep.collect([tree])))
    epochs, mean, std = rep.epoch_curve(rows["convshort"]["runs"], "test_top1")
    assert epochs == [1, 2, 3]
    assert mean == pytest.approx([40.5, 56.5, 62.0])
    assert std == pytest.approx([math.sqrt(0.5), math.sqrt(4.5), math.sqrt(8.0)])
    # the unfinished bn run contributes the epochs it reached
    epochs, mean, std = rep.epoch_curve(rows["bn"]["runs"], "test_top1")
    assert epochs == [1, 2, 3] and mean == pytest.approx([46.5, 64.0, 70.0]) and std[2] == 0.0


def test_group_by_and_mixed_config_warning(tmp_path):
    write_run(tmp_path / "a", "idshort", 0, [50.0], lr=0.01)
    write_run(tmp_path / "b", "idshort", 1, [60.0], lr=0.1)
    table = rep.aggregate(rep.collect([tmp_path]))
    row = only_row(table)
    assert row["seeds"] == 2 and row["mixed_keys"] == ["optim.lr"]
    assert "also differ in optim.lr" in rep.markdown_table(table, rep.DEFAULT_GROUP_BY)
    table = rep.aggregate(rep.collect([tmp_path]), rep.parse_group_by(["+optim.lr"]))
    assert sorted(table["optim.lr"]) == [0.01, 0.1] and not any(table["mixed_keys"])
    assert rep.parse_group_by(["init", "seed"]) == ["init", "seed"]
    assert rep.parse_group_by(None) == list(rep.DEFAULT_GROUP_BY)


def test_logging_and_progress_settings_are_not_a_difference_between_seeds(tmp_path):
    """Seeds logged to other loggers, with other progress intervals or checkpoint frequencies, ran the
    same experiment: the report groups them without the mixed-settings warning."""
    for seed, logger, every in ((0, {"tensorboard": {}}, 30.0), (1, {"csv": {}, "wandb": {"mode": "offline"}}, 5.0)):
        run = write_run(tmp_path / str(seed), "idshort", seed, [50.0 + seed])
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["logger"] = logger
        config["trainer"].update(progress_every_s=every, checkpoint_every_steps=100 * seed)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    row = only_row(rep.aggregate(rep.collect([tmp_path])))
    assert row["seeds"] == 2 and row["mixed_keys"] == []


def test_references_match_and_convert_errors(tmp_path, tree):
    refs_file = tmp_path / "refs.yaml"
    refs_file.write_text(
        yaml.safe_dump(
            {
                "references": [
                    {
                        "id": "X",
                        "source": "paper X, Table 1",
                        "setting": "bn",
                        "match": {"data": "cifar10", "init": "bn"},
                        "test_error": 8.75,
                    },
                    {
                        "id": "Y",
                        "source": "paper Y",
                        "setting": "any ResNet-20 or -56",
                        "match": {"model": ["resnet20", "resnet56"]},
                        "test_top1": 91.0,
                    },
                    {
                        "id": "Z",
                        "source": "paper Z",
                        "setting": "other data",
                        "match": {"data": "imagenet"},
                        "test_top1": 76.0,
                    },
                ]
            }
        )
    )
    refs = rep.load_references(refs_file)
    assert refs[0]["test_top1"] == pytest.approx(91.25)
    rows = rows_by_init(rep.attach_references(rep.aggregate(rep.collect([tree])), refs))
    assert [r["id"] for r in rows["bn"]["references"]] == ["X", "Y"]
    assert [r["id"] for r in rows["idshort"]["references"]] == ["Y"]


def test_packaged_references_are_well_formed():
    refs = rep.load_references()
    assert len({r["id"] for r in refs}) == len(refs)
    for r in refs:
        assert r["source"] and r["setting"] and r["match"] and 0 < r["test_top1"] < 100
    by_id = {r["id"]: r for r in refs}
    assert by_id["He16a-R56"]["test_top1"] == pytest.approx(93.03)
    assert by_id["TV-R50"]["test_top1"] == pytest.approx(76.13)


def test_write_table_and_plots(tree, tmp_path):
    table = rep.aggregate(rep.collect([tree]))
    out = tmp_path / "out"
    files = rep.write_table(table, rep.DEFAULT_GROUP_BY, out)
    md = files["markdown"].read_text()
    assert "53.00 ± 3.61" in md and "62.00 ± 2.83" in md and "| 70.00 |" in md
    with open(files["csv"]) as f:
        records = {r["init"]: r for r in csv.DictReader(f)}
    assert float(records["idshort"]["final_test_top1_mean"]) == pytest.approx(53.0)
    assert float(records["idshort"]["final_test_top1_std"]) == pytest.approx(math.sqrt(13.0))
    assert (records["convshort"]["seeds"], records["convshort"]["diverged"]) == ("2", "1")
    assert (records["bn"]["unfinished"], records["bn"]["final_test_top1_std"]) == ("1", "")

    assert records["convshort"]["seed_values"] == "0;1;2"
    figures = rep.plot_curves(table, rep.DEFAULT_GROUP_BY, out, formats=("png", "pdf"))
    # one figure (per data/model/width), every scheme in it
    assert sorted(p.name for p in figures) == [
        "curves_synthetic_cifar10_resnet20_8.pdf",
        "curves_synthetic_cifar10_resnet20_8.png",
    ]
    png = out / "curves_synthetic_cifar10_resnet20_8.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_command_line(tree, tmp_path, capsys):
    out = tmp_path / "cli"
    cli_main(["report", str(tree / "multirun"), str(tree / "single"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "53.00 ± 3.61" in printed and (out / "report.md").exists() and (out / "report.csv").exists()
    assert list(out.glob("curves_*.png"))
    with pytest.raises(SystemExit) as e:
        cli_main(["report", str(tree / "not_a_run"), "--out", str(out)])
    assert e.value.code == 2


def test_report_reads_real_runs(make_cfg, tmp_path):
    """What train() writes is what the report reads: two seeds of a tiny run with a validation split."""
    for seed in (0, 1):
        train(
            make_cfg(
                [
                    *TINY,
                    "init=idshort",
                    f"seed={seed}",
                    "data.train_subset=64",
                    "data.test_subset=64",
                    "data.val_size=32",
                ],
                tmp_path / f"run{seed}",
            )
        )
    row = only_row(rep.aggregate(rep.collect([tmp_path])))
    results = [json.loads((tmp_path / f"run{s}" / "result.json").read_text()) for s in (0, 1)]
    tops = [r["test_top1"] for r in results]
    assert row["init"] == "idshort" and row["weights"] == "he_fanout" and row["data"] == "digits"
    assert row["seeds"] == 2 and row["epochs"] == 2 and not row["mixed_keys"]
    assert row["final_test_top1_mean"] == pytest.approx(sum(tops) / 2)
    assert row["final_test_top1_std"] == pytest.approx(abs(tops[0] - tops[1]) / math.sqrt(2))
    for figure in ("best_val_top1", "test_top1_at_best_val"):
        assert row[f"{figure}_mean"] == pytest.approx(sum(r[figure] for r in results) / 2)
    epochs, _, _ = rep.epoch_curve(row["runs"], "train_top1")
    assert epochs == [1, 2]


def test_preset_sweep_then_report(tmp_path):
    """`nfbench train -m experiment=...` runs the preset's grid (the command line narrows it), and the
    report reads the multirun tree it writes."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "nfbench.cli",
        "train",
        "-m",
        "experiment=civitelli_cifar100_resnet50",
        "seed=0",
        "data=digits",
        "data.train_subset=32",
        "data.test_subset=32",
        "data.batch_size=32",
        "model.width=2",
        "trainer.epochs=1",
        "trainer.progress=false",
        "trainer.device=cpu",
        f"hydra.sweep.dir={sweep}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    rows = rows_by_init(rep.aggregate(rep.collect([sweep])))
    assert set(rows) == {"bn", "bn_conv_shortcut", "convshort"} and all(r["seeds"] == 1 for r in rows.values())


def test_metrics_of_older_versions_count_epochs_from_one(tmp_path):
    """nfbench before checkpoint version 2 numbered metrics.jsonl's epochs from 0; read, they count from 1."""
    run = write_run(tmp_path / "old", "bn", 0, [40.0, 50.0])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "epoch": r["epoch"] - 1}) + "\n" for r in lines))
    epochs, mean, _ = rep.epoch_curve(rep.collect([tmp_path]), "test_top1")
    assert epochs == [1, 2] and mean == [40.0, 50.0]


def test_committed_gpu_evidence_reproduces_its_table():
    """docs/results-cifar10-gpu.md's table comes from its committed run files (an H200 run, 2026-11-26):
    the report rebuilds every row's final test top-1 and epoch count.  That ResNet-20 is nfbench's
    pre-activation network (the preset's model=resnet20 then), not He et al. 2016a's, so their published
    number (He16a-R20, matched by model=he_resnet20) is not set beside it."""
    runs_dir = Path(__file__).resolve().parents[1] / "docs" / "results-cifar10-gpu" / "runs"
    table = rep.attach_references(rep.aggregate(rep.collect([runs_dir])), rep.load_references())
    rows = rows_by(table, "model", "init", "weights")
    expected = {
        ("resnet20", "bn", "he_fanin"): (164, 87.67),
        ("resnet18", "bn", "he_fanin"): (38, 87.28),
        ("resnet18", "idshort", "he_fanout"): (38, 83.83),
        ("resnet18", "learnscalar", "he_fanout"): (38, 84.65),
        ("resnet18", "convshort", "he_fanout"): (38, 83.40),
        ("resnet18", "convshort", "brock"): (38, 83.41),
    }
    assert set(rows) == set(expected)
    for key, (epochs, top1) in expected.items():
        row = rows[key]
        assert (row["seeds"], row["epochs"], row["final_test_top1_mean"]) == (1, epochs, top1), key
    assert [ref["id"] for ref in rows["resnet20", "bn", "he_fanin"]["references"]] == []
    # Written before epochs counted from 1: the curve still starts at epoch 1 and ends at 164.
    epochs, _, _ = rep.epoch_curve(rows["resnet20", "bn", "he_fanin"]["runs"], "test_top1")
    assert (epochs[0], epochs[-1], len(epochs)) == (1, 164, 164)


def test_committed_he_diagnosis_reproduces_its_table():
    """docs/results-cifar10-gpu.md's check of He et al.'s ResNet-20 (an H200 run, 2026-11-26, one call of
    scripts/gpu_evidence.sh with HE_RUNS="eager compiled compiled@50" HE_EPOCHS=60): grouped by data
    root and trainer.compile, the three runs stay three rows - compiled 87.17, eager 86.80, compiled on
    the images re-encoded at JPEG quality 50 84.70 - and are not averaged as seeds of one run."""
    runs_dir = Path(__file__).resolve().parents[1] / "docs" / "results-cifar10-gpu" / "he-diagnosis" / "runs"
    group_by = rep.parse_group_by(["+data.root", "+trainer.compile"])
    table = rep.aggregate(rep.collect([runs_dir]), group_by)
    got = {
        (Path(row["data.root"]).name, row["trainer.compile"]): (
            row["seeds"],
            row["epochs"],
            row["final_test_top1_mean"],
        )
        for _, row in table.iterrows()
    }
    assert got == {("data", True): (1, 60, 87.17), ("data", False): (1, 60, 86.80), ("data_q50", True): (1, 60, 84.70)}
    merged = rep.aggregate(rep.collect([runs_dir]))  # without the two keys: one row of three "seeds"
    assert len(merged) == 1 and merged.iloc[0]["seeds"] == 3


def test_committed_gpu_report_files_are_what_the_report_writes(tmp_path):
    """report.md and report.csv under docs/results-cifar10-gpu/report are, byte for byte, what
    `nfbench report docs/results-cifar10-gpu/runs` writes: the table's layout, its numbers (to the
    last digit of the CSV) and its notes stay as the committed evidence shows them."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "results-cifar10-gpu"
    table = rep.attach_references(rep.aggregate(rep.collect([docs / "runs"])), rep.load_references())
    files = rep.write_table(table, rep.DEFAULT_GROUP_BY, tmp_path)
    for name in ("markdown", "csv"):
        assert files[name].read_bytes() == (docs / "report" / files[name].name).read_bytes(), name


def test_headline_is_final_test_top1_and_best_is_selected_on_validation(tmp_path):
    """Two seeds with a validation split: validation peaks at epoch 2 in both, where the test top-1 is 60 and 50;
    the final test top-1 (55, 65) is the headline.  Beside them an older run whose result.json has no
    validation keys: it is read, with '-' for the validation columns.  No test-selected best is shown."""
    write_run(tmp_path / "a", "idshort", 0, [30.0, 60.0, 55.0], val_top1=[35.0, 62.0, 58.0])
    write_run(tmp_path / "b", "idshort", 1, [40.0, 50.0, 65.0], val_top1=[45.0, 61.0, 59.0])
    write_run(tmp_path / "old", "bn", 0, [48.0, 66.0, 70.0])
    table = rep.aggregate(rep.collect([tmp_path]))
    ids, bn = rows_by_init(table)["idshort"], rows_by_init(table)["bn"]
    assert (ids["final_test_top1_mean"], ids["final_test_top1_std"]) == (
        pytest.approx(60.0),
        pytest.approx(math.sqrt(50.0)),
    )
    assert (ids["best_val_top1_mean"], ids["best_val_top1_std"]) == (pytest.approx(61.5), pytest.approx(math.sqrt(0.5)))
    assert (ids["test_top1_at_best_val_mean"], ids["test_top1_at_best_val_std"]) == (
        pytest.approx(55.0),
        pytest.approx(math.sqrt(50.0)),
    )
    assert bn["final_test_top1_mean"] == pytest.approx(70.0) and pd.isna(bn["final_test_top1_std"])
    assert pd.isna(bn["best_val_top1_mean"]) and pd.isna(bn["best_val_top1_std"])
    files = rep.write_table(table, rep.DEFAULT_GROUP_BY, tmp_path / "out")
    md = files["markdown"].read_text()
    head = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert head[head.index("epochs") + 1 : head.index("epochs") + 4] == [
        "final test top-1 (%)",
        "best val top-1 (%)",
        "test top-1 at best val (%)",
    ]
    assert "| 60.00 ± 7.07 | 61.50 ± 0.71 | 55.00 ± 7.07 |" in md and "| 70.00 | - | - |" in md
    assert "best test" not in md
    with open(files["csv"]) as f:
        records = {r["init"]: r for r in csv.DictReader(f)}
    assert float(records["idshort"]["test_top1_at_best_val_mean"]) == pytest.approx(55.0)
    assert float(records["idshort"]["best_val_top1_mean"]) == pytest.approx(61.5)
    assert records["bn"]["best_val_top1_mean"] == "" and not any("best_test" in k for k in records["bn"])


def test_report_writes_into_the_first_directory_by_default(tree, tmp_path, monkeypatch, capsys):
    """`nfbench report DIR ...` writes DIR/report (the first DIR's), not ./report; --out still wins."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cli_main(["report", str(tree / "multirun"), str(tree / "single")])
    written = tree / "multirun" / "report"
    assert (written / "report.md").exists() and (written / "report.csv").exists()
    assert not (cwd / "report").exists() and not (tree / "single" / "report").exists()
    assert str(tree / "multirun" / "report") in capsys.readouterr().out
    cli_main(["report", str(tree / "single"), "--out", str(tmp_path / "chosen")])
    assert (tmp_path / "chosen" / "report.md").exists() and not (tree / "single" / "report").exists()
    # A second report over the same tree reads its runs, not the report folder the first one left there.
    cli_main(["report", str(tree / "multirun")])
    assert "53.00 ± 3.61" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["report", "--help"])
    assert "first DIR" in capsys.readouterr().out


def test_fixup_imagenet_reference_attaches_to_fixup_resnet50_runs_with_its_mixup(tmp_path):
    """hongyi-zhang/Fixup's README number (ResNet-50 + Fixup, ImageNet, mixup alpha 0.7: top-1 around 76.0%)
    sits beside Fixup ResNet-50 ImageNet runs with that mixup, not beside BatchNorm or mixup-free ones."""
    for name, init, alpha in (("fixup", "fixup", 0.7), ("bn", "bn", 0.7), ("no_mixup", "fixup", 0.0)):
        run = write_run(tmp_path / name, init, 0, [70.0], model="resnet50", data="imagenet", epochs=1)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["trainer"]["mixup_alpha"] = alpha
        config["experiment"] = name
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    table = rep.attach_references(rep.aggregate(rep.collect([tmp_path])), rep.load_references())
    refs = {row["experiment"]: [r["id"] for r in row["references"]] for _, row in table.iterrows()}
    assert refs == {"fixup": ["TV-R50", "Fixup-R50"], "bn": ["TV-R50"], "no_mixup": ["TV-R50"]}
    fixup = next(r for r in rep.load_references() if r["id"] == "Fixup-R50")
    assert fixup["test_top1"] == 76.0 and "hongyi-zhang/Fixup" in fixup["source"]


def test_he_reference_attaches_only_to_runs_on_the_whole_training_set(tmp_path):
    """He et al.'s ResNet-20 number (references.yaml He16a-R20) stands beside their BatchNorm ResNet-20
    (model=he_resnet20) trained on all of CIFAR-10, not beside a study run on a 10,000-image subset, whose
    plot it would squash, nor beside nfbench's pre-activation ResNet-20, another network, nor beside a run on
    the JPEG copy of CIFAR-10 (its data fingerprint), other pixels."""
    write_run(tmp_path / "full", "bn", 0, [90.0], model="he_resnet20", copy="original")
    subset = write_run(tmp_path / "subset", "bn", 0, [40.0], lr=0.02, model="he_resnet20", copy="original")
    write_run(tmp_path / "preact", "bn", 0, [90.0], lr=0.03, copy="original")
    write_run(tmp_path / "jpeg", "bn", 0, [90.0], lr=0.04, model="he_resnet20", copy="JPEG copy")
    config = yaml.safe_load((subset / "config.yaml").read_text())
    config["data"]["train_subset"] = 10000
    (subset / "config.yaml").write_text(yaml.safe_dump(config))
    table = rep.attach_references(
        rep.aggregate(rep.collect([tmp_path]), [*rep.DEFAULT_GROUP_BY, "optim.lr"]), rep.load_references()
    )
    refs = {row["optim.lr"]: [r["id"] for r in row["references"]] for _, row in table.iterrows()}
    assert refs == {0.01: ["He16a-R20"], 0.02: [], 0.03: [], 0.04: []}


def test_seeds_on_different_pixels_are_never_averaged(tmp_path):
    """Issue 20 item 2: the report names each row's data copy by its fingerprint and keeps copies apart,
    even when the keys asked for would merge them."""
    for seed in (0, 1):
        write_run(tmp_path / f"original{seed}", "bn", seed, [90.0 + seed], copy="original")
        write_run(tmp_path / f"jpeg{seed}", "bn", seed, [80.0 + seed], copy="JPEG copy")
    write_run(tmp_path / "old", "bn", 0, [70.0])  # before fingerprints: unknown
    for group_by in (rep.DEFAULT_GROUP_BY, ["model", "init"]):
        table = rep.aggregate(rep.collect([tmp_path]), group_by)
        means = dict(zip(table["data_copy"], table["final_test_top1_mean"]))
        assert means == {"original": 90.5, "JPEG copy": 80.5, "unknown": 70.0}
        assert dict(zip(table["data_copy"], table["seeds"])) == {"original": 2, "JPEG copy": 2, "unknown": 1}
    other = {"kind": "pixels", "train": "ab" * 32, "test": "cd" * 32}
    assert rep.copy_label(other) == "ab" * 6 and rep.copy_label({**other, "kind": "files"}) == "files:" + "ab" * 6
