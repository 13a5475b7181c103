"""Smoke tests of jobs/train.py and jobs/evaluate.py on a tiny generated corpus (local-mode Spark)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs import evaluate, extract_features, train
from jobs._cli import run
from ser_udfs.errors import UserError
from ser_udfs.synthetic.speech import write_demo_corpus

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-job")
    write_demo_corpus(root / "corpus", n_actors=4, statements=1, repetitions=1)
    out = {}
    for name, extra in (("default", []), ("mels64", ["--set", "mel.n_mels=64"])):
        out[name] = root / name
        argv = ["--input", str(root / "corpus"), "--output", str(out[name]), "--log-level", "WARNING", *extra]
        assert extract_features.main(argv) == 0
    return out


def test_logreg_cross_validates_and_writes_a_bundle(tables, tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "logreg"
    argv = ["--features", str(tables["default"]), "--model", "logreg", "--folds", "2", "--output", str(bundle)]
    assert train.main(argv) == 0
    assert "speaker-independent" in capsys.readouterr().out
    config = json.loads((bundle / "config.json").read_text())
    assert config["model_kind"] == "logreg" and config["taxonomy"]["name"] == "core6"
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert len(metrics["summary"]["ua"]["values"]) == 2
    assert (bundle / "confusion_matrix.png").stat().st_size > 1000

    report = tmp_path / "report"
    assert evaluate.main(["--features", str(tables["default"]), "--model", str(bundle), "--output", str(report)]) == 0
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation["rows"] == 60 - 4 * 2  # 60 clips minus surprise (2 intensities per actor), calm → neutral
    assert evaluation["speakers_seen_in_training"]


def test_cnn_trains_one_epoch_on_a_holdout(tables, tmp_path: Path) -> None:
    bundle = tmp_path / "cnn"
    argv = ["--features", str(tables["default"]), "--model", "cnn", "--folds", "1", "--output", str(bundle),
            "--taxonomy", "basic4", "--set", "cnn.max_epochs=1", "--set", "cnn.channels=[8, 8, 8, 8]"]
    assert train.main(argv) == 0
    assert (bundle / "model.safetensors").exists()
    assert json.loads((bundle / "config.json").read_text())["labels"] == ["angry", "happy", "neutral", "sad"]


def test_evaluate_refuses_a_table_with_another_feature_config(tables, tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "logreg"
    assert train.main(["--features", str(tables["default"]), "--model", "logreg", "--folds", "1", "--output", str(bundle)]) == 0
    status = run(evaluate.main, ["--features", str(tables["mels64"]), "--model", str(bundle), "--output", str(tmp_path / "r")])
    assert status == 2
    assert "mel.n_mels" in capsys.readouterr().err


def test_evaluate_refuses_options_it_does_not_use(capsys) -> None:
    status = run(evaluate.main, ["--features", "/t", "--model", "/m", "--output", "/r", "--set", "mel.n_mels=64"])
    assert status == 2
    assert "does not take --set mel.n_mels=64" in capsys.readouterr().err


def test_random_split_is_said_in_the_report(tables, tmp_path: Path) -> None:
    bundle = tmp_path / "random"
    argv = ["--features", str(tables["default"]), "--model", "logreg", "--split", "random", "--folds", "1",
            "--output", str(bundle)]
    assert train.main(argv) == 0
    split = json.loads((bundle / "metrics.json").read_text())["split"]
    assert split["method"] == "random" and "random" in split["description"]


def test_accuracy_bench_trains_models_side_by_side_and_prints_the_table(tables, tmp_path: Path, capsys) -> None:
    from bench import accuracy

    argv = ["--table", str(tables["default"]), "--models", "logreg,cnn", "--taxonomies", "basic4", "--folds", "2",
            "--parallel", "2", "--work", str(tmp_path), "--set", "cnn.max_epochs=1", "--set", "cnn.channels=[8, 8]",
            "--set", "logreg.regularisation_c=0.5"]
    assert accuracy.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| basic4 | logreg |" in printed and "| basic4 | cnn |" in printed and "FAILED" not in printed
    cnn_config = json.loads((tmp_path / "cnn-basic4" / "config.json").read_text())
    assert cnn_config["architecture"]["channels"] == [8, 8]  # the cnn.* overrides reached the CNN run
    logreg_config = json.loads((tmp_path / "logreg-basic4" / "config.json").read_text())
    assert logreg_config["model_kind"] == "logreg"  # and the logreg run was not given them
    assert "epoch 1/1" in (tmp_path / "cnn-basic4.log").read_text()


def test_accuracy_bench_reports_a_failed_run_and_keeps_the_others(tables, tmp_path: Path, capsys) -> None:
    from bench import accuracy

    argv = ["--table", str(tables["default"]), "--models", "logreg", "--taxonomies", "basic4,no_such_taxonomy",
            "--folds", "2", "--parallel", "2", "--work", str(tmp_path)]
    assert accuracy.main(argv) == 1
    printed = capsys.readouterr().out
    assert "| basic4 | logreg |" in printed and "no_such_taxonomy logreg: FAILED" in printed


def test_ensemble_bench_scores_each_member_and_their_ensemble_per_fold(tables, capsys) -> None:
    from bench import ensemble_gain

    argv = ["--table", str(tables["default"]), "--taxonomies", "basic4", "--members", "2", "--folds", "2",
            "--parallel", "1", "--set", "split.folds=2", "--set", "cnn.max_epochs=1", "--set", "cnn.channels=[8, 8]"]
    assert ensemble_gain.main(argv) == 0
    printed = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| basic4 |")]
    assert [row[1].strip() for row in rows] == ["2", "mean"]  # only the fold asked for, then the mean
    member_1, member_2, mean, ensemble, gain = (float(cell) for cell in rows[0][2:])
    assert 0.0 <= min(member_1, member_2, ensemble) and max(member_1, member_2, ensemble) <= 1.0
    assert mean == pytest.approx((member_1 + member_2) / 2, abs=1e-3)
    assert gain == pytest.approx(ensemble - mean, abs=2e-3)
    assert "1 of 2 folds" in printed


def test_ensemble_bench_with_a_stats_model_scores_it_and_the_fusion(tables, tmp_path: Path, capsys) -> None:
    from bench import ensemble_gain
    from training.models.fusion import fuse_probabilities

    argv = ["--table", str(tables["default"]), "--taxonomies", "basic4", "--members", "1", "--folds", "1",
            "--set", "split.folds=2", "--set", "cnn.max_epochs=1", "--set", "cnn.channels=[8, 8]",
            "--set", "cnn.stats_fusion_weight=0.35", "--save", str(tmp_path / "saved")]
    assert ensemble_gain.main(argv) == 0
    printed = capsys.readouterr().out
    assert "and its fusion with the stats model" in printed and "| fused (0.35) |" in printed
    row = next(line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| basic4 | 1 |"))
    member, mean, ensemble, gain, stats, fused = (float(cell) for cell in row[2:])
    assert member == mean == ensemble and gain == 0.0  # one network is its own ensemble
    assert 0.0 <= min(stats, fused) and max(stats, fused) <= 1.0
    saved = np.load(tmp_path / "saved" / "basic4-fold1.npz")
    n, k = saved["ensemble"].shape
    assert saved["members"].shape == (1, n, k) and len(saved["paths"]) == len(saved["speakers"]) == len(saved["targets"]) == n
    assert list(saved["labels"]) == ["angry", "happy", "neutral", "sad"]
    np.testing.assert_allclose(saved["fused"], fuse_probabilities(saved["ensemble"], saved["stats"], 0.35), atol=1e-5)

    from bench import fusion_refit

    # The same stats settings refitted: the saved run's stats and fused UA again, at weight 0.35.
    assert fusion_refit.main(["--table", str(tables["default"]), "--saved", str(tmp_path / "saved"), "--taxonomies",
                              "basic4", "--weights", "0.35,0.6", "--set", "split.folds=2", "--set", "cnn.channels=[8, 8]",
                              "--set", "cnn.stats_fusion_weight=0.35"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| fold |"))
    assert header.split("|")[2:-1] == [f" {name} " for name in ("ensemble", "saved stats", "saved fused", "C", "stats",
                                                                 "fused 0.35", "fused 0.6")]
    refitted = dict(zip(header.split("|")[2:-1], next(line for line in printed.splitlines() if line.startswith("| 1 |")).split("|")[2:-1]))
    assert float(refitted[" stats "]) == pytest.approx(stats, abs=1e-3) and refitted[" stats "] == refitted[" saved stats "]
    assert float(refitted[" fused 0.35 "]) == pytest.approx(fused, abs=1e-3)
    with pytest.raises(UserError, match="not this split's"):
        fusion_refit.main(["--table", str(tables["default"]), "--saved", str(tmp_path / "saved"), "--taxonomies", "basic4",
                           "--set", "split.folds=3", "--set", "cnn.stats_fusion_weight=0.35"])
    with pytest.raises(UserError, match="--members 2, but the saved run has 1 networks"):
        fusion_refit.main(["--table", str(tables["default"]), "--saved", str(tmp_path / "saved"), "--taxonomies", "basic4",
                           "--members", "2", "--set", "split.folds=2", "--set", "cnn.stats_fusion_weight=0.35"])

    # The weight chosen on the speakers the fold held out to early-stop on, as the training job chooses it.
    assert len(saved["held_out_paths"]) == len(saved["held_out_ensemble"]) > 0
    assert not set(saved["held_out_paths"]) & set(saved["paths"])
    search = ["--table", str(tables["default"]), "--saved", str(tmp_path / "saved"), "--taxonomies", "basic4",
              "--weights", "0.2,0.6", "--set", "split.folds=2", "--set", "cnn.channels=[8, 8]",
              "--set", "cnn.stats_fusion_weight=0.35", "--set", "cnn.stats_fusion_weight_search=[0.2, 0.6]"]
    assert fusion_refit.main(search) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| fold |")).split("|")[2:-1]
    row = dict(zip(header, next(line for line in lines if line.startswith("| 1 |")).split("|")[2:-1]))
    weight = float(row[" chosen weight "])
    assert weight in (0.2, 0.6) and row[" fused, chosen weight "] == row[f" fused {weight:g} "]
    older = tmp_path / "older"
    older.mkdir()
    np.savez(older / "basic4-fold1.npz", **{key: saved[key] for key in saved.files if not key.startswith("held_out")})
    with pytest.raises(UserError, match="no held-out probabilities"):
        fusion_refit.main([*search[:3], str(older), *search[4:]])
    doubled = tmp_path / "doubled"  # two networks saved: their held-out probabilities are the pair's
    doubled.mkdir()
    np.savez(doubled / "basic4-fold1.npz", **{key: saved[key] for key in saved.files if key != "members"},
             members=np.concatenate([saved["members"], saved["members"]]))
    with pytest.raises(UserError, match="choose the fusion weight without --members"):
        fusion_refit.main([*search[:3], str(doubled), *search[4:], "--members", "1"])


def test_fusion_refit_takes_the_ensemble_of_the_saved_runs_first_networks() -> None:
    from bench.fusion_refit import saved_ensemble

    members = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 5))  # [3 networks, 5 clips, 4 classes]
    saved = {"members": members, "ensemble": members.mean(axis=0) + 1e-3}  # marked: the saved array, not a recomputed mean
    assert saved_ensemble(saved, None, fold=1) is saved["ensemble"] and saved_ensemble(saved, 3, fold=1) is saved["ensemble"]
    np.testing.assert_allclose(saved_ensemble(saved, 2, fold=1), (members[0] + members[1]) / 2)
    np.testing.assert_array_equal(saved_ensemble(saved, 1, fold=1), members[0])
    with pytest.raises(UserError, match="fold 2: --members 4, but the saved run has 3 networks"):
        saved_ensemble(saved, 4, fold=2)
