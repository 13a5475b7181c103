"""The optional eGeMAPS column: computed in the per-clip function, read by stats models side by side
with the stats vector, and recomputed for scoring windows when a bundle needs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_udfs.audio.preprocess import preprocess
from ser_udfs.errors import UserError
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.features.config import EgemapsConfig, FeatureConfig
from ser_udfs.features.egemaps import N_EGEMAPS, egemaps_names
from ser_udfs.synthetic.speech import synth_utterance, write_demo_corpus
from training.stats_inputs import check_stats_inputs, stats_vector

EGEMAPS = FeatureConfig(egemaps=EgemapsConfig(enabled=True))


def test_a_config_without_egemaps_keeps_its_version_and_one_with_it_does_not() -> None:
    plain = FeatureConfig()
    assert "egemaps" not in plain.to_dict()  # tables and bundles made before the section keep their version
    assert FeatureConfig.from_dict(plain.to_dict()) == plain
    assert EGEMAPS.to_dict()["egemaps"] == {"enabled": True}
    assert FeatureConfig.from_dict(EGEMAPS.to_dict()) == EGEMAPS
    assert EGEMAPS.version() != plain.version()
    assert plain.describe_difference(EGEMAPS) == ["egemaps.enabled: None here, True there"]


def test_egemaps_functionals_are_88_finite_values_that_follow_the_voice() -> None:
    wave = synth_utterance("angry", speaker_seed=1, utterance_seed=2, sample_rate=16000, duration_s=2.0)
    clip = preprocess(wave[None], 16000, EGEMAPS.audio)
    features = compute_features_batch(np.stack([clip, 0.1 * clip]), 16000, EGEMAPS)
    assert features["egemaps"].shape == (2, N_EGEMAPS) and features["egemaps"].dtype == np.float32
    assert np.isfinite(features["egemaps"]).all()
    names = egemaps_names()
    assert len(names) == N_EGEMAPS and names[0].startswith("F0semitone")
    loudness = names.index("loudness_sma3_amean")
    assert features["egemaps"][0, loudness] > 2 * features["egemaps"][1, loudness]
    pitch = names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    assert features["egemaps"][0, pitch] == pytest.approx(features["egemaps"][1, pitch], abs=1.0)  # pitch, not level
    assert "egemaps" not in compute_features_batch(clip[None], 16000, FeatureConfig())


def test_stats_inputs_are_joined_in_their_order_and_checked() -> None:
    batch = {"stats": np.ones((3, 4), np.float32), "egemaps": np.zeros((3, 2), np.float32)}
    np.testing.assert_array_equal(stats_vector(batch, ["egemaps", "stats"])[0], [0, 0, 1, 1, 1, 1])
    with pytest.raises(UserError, match="--set egemaps.enabled=true"):
        stats_vector({"stats": batch["stats"]}, ["stats", "egemaps"])
    for bad in ([], ["stats", "stats"], ["mfcc"]):
        with pytest.raises(ValueError, match="logreg.inputs"):
            check_stats_inputs(bad, setting="logreg.inputs")


@pytest.fixture(scope="module")
def egemaps_table(spark, tmp_path_factory) -> Path:
    from jobs import extract_features

    root = tmp_path_factory.mktemp("egemaps")
    write_demo_corpus(root / "corpus", n_actors=4, statements=1, repetitions=1)
    argv = ["--input", str(root / "corpus"), "--output", str(root / "table"), "--log-level", "WARNING",
            "--set", "egemaps.enabled=true"]
    assert extract_features.main(argv) == 0
    return root / "table"


@pytest.mark.spark
def test_extraction_writes_the_egemaps_column_and_a_logreg_reads_it_beside_the_stats(
        egemaps_table: Path, tmp_path: Path) -> None:
    from jobs import evaluate, train

    rows = pd.read_parquet(egemaps_table / "features", columns=["stats", "egemaps"])
    assert len(rows) and all(len(values) == N_EGEMAPS for values in rows["egemaps"])
    manifest = json.loads((egemaps_table / "_manifest.json").read_text())
    assert manifest["feature_config"]["egemaps"] == {"enabled": True}

    bundle = tmp_path / "logreg"
    argv = ["--features", str(egemaps_table), "--model", "logreg", "--folds", "2", "--output", str(bundle),
            "--set", 'logreg.inputs=["stats", "egemaps"]']
    assert train.main(argv) == 0
    config = json.loads((bundle / "config.json").read_text())
    assert config["inputs"] == ["stats", "egemaps"]
    assert config["architecture"]["n_stats"] == len(rows["stats"].iloc[0]) + N_EGEMAPS
    report = tmp_path / "report"
    assert evaluate.main(["--features", str(egemaps_table), "--model", str(bundle), "--output", str(report)]) == 0

    from training.bundle.load import load_bundle

    config["inputs"] = ["mfcc"]  # a config.json naming inputs no stats model reads
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not the inputs \\['mfcc'\\]"):
        load_bundle(bundle)


@pytest.mark.spark
def test_a_table_without_egemaps_says_how_to_get_them(spark, tmp_path: Path, capsys) -> None:
    from jobs import extract_features, train
    from jobs._cli import run

    write_demo_corpus(tmp_path / "corpus", n_actors=2, statements=1, repetitions=1, emotions=["neutral", "angry"])
    argv = ["--input", str(tmp_path / "corpus"), "--output", str(tmp_path / "table"), "--log-level", "WARNING"]
    assert extract_features.main(argv) == 0
    capsys.readouterr()
    status = run(train.main, ["--features", str(tmp_path / "table"), "--model", "logreg", "--folds", "2",
                              "--output", str(tmp_path / "bundle"), "--set", 'logreg.inputs=["egemaps"]'])
    assert status == 2
    message = capsys.readouterr().err.strip()
    assert "--set egemaps.enabled=true" in message and "\n" not in message


@pytest.mark.spark
def test_a_cnn_fused_with_an_egemaps_model_scores_calls_from_fresh_windows(egemaps_table: Path, tmp_path: Path) -> None:
    from jobs import train
    from ser_udfs.calls.config import CallScoringConfig
    from ser_udfs.calls.stream import score_call
    from ser_udfs.synthetic.calls import write_long_call
    from training.inference import load_call_model

    bundle = tmp_path / "fused"
    argv = ["--features", str(egemaps_table), "--model", "cnn", "--folds", "1", "--output", str(bundle),
            "--taxonomy", "basic4", "--set", "cnn.max_epochs=1", "--set", "cnn.channels=[8, 8]",
            "--set", "cnn.stats_fusion_weight=0.35", "--set", 'cnn.stats_inputs=["egemaps"]']
    assert train.main(argv) == 0
    config = json.loads((bundle / "config.json").read_text())
    assert config["inputs"] == ["log_mel", "egemaps"] and config["stats_fusion"]["n_stats"] == N_EGEMAPS
    model = load_call_model(bundle)
    assert model.adapts_to_speaker
    call = tmp_path / "call.wav"
    write_long_call(call, 40.0, seed=3)
    scores = score_call(call, model, CallScoringConfig())
    assert scores.windows_scored > 4
    for channel in scores.channels:
        assert np.allclose(channel.probabilities.sum(axis=1), 1.0, atol=1e-5)
