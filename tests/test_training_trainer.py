"""Training orchestration, bundles and evaluation on small synthetic features tables."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ser_udfs.errors import UserError
from ser_udfs.features.config import FeatureConfig, MelConfig
from training.bundle.format import CONFIG_FILE, METRICS_FILE, STATS_MODEL_FILE, WEIGHTS_FILE
from training.bundle.load import load_bundle, load_bundle_from_files
from training.calibration import apply_temperature
from training.models.cnn import CnnConfig
from training.models.cnn import predict_proba as cnn_predict_proba
from training.data import feature_batch, standardisation_groups
from training.evaluate import EVALUATION_FILE, PREDICTIONS_FILE, evaluate_frame, predict_frame
from training.inference import CallModel
from training.models.fusion import fuse_probabilities
from training.models.logreg import LogregConfig
from training.speaker_norm import speaker_standardise
from training.splits import SplitConfig
from training.protocol import CONFUSION_PLOT, CURVES_PLOT, RELIABILITY_PLOT, TrainConfig, train_from_frame

torch.set_num_threads(1)

LABELS = ("angry", "happy", "neutral", "sad")
N_MELS, N_MFCC, N_FRAMES, N_STATS = 12, 4, 20, 10
FEATURE_CONFIG = FeatureConfig(mel=MelConfig(n_mels=N_MELS))
TINY_CNN = CnnConfig(
    channels=(4, 8), max_epochs=2, patience=1, batch_size=8, freq_mask_max_rows=3, time_mask_max_frames=3,
    validation_fraction=0.25,
)


def synthetic_frame(n_speakers: int = 6, clips_per_label: int = 3, *, augmented: bool = True, seed: int = 0) -> pd.DataFrame:
    """Features rows whose log-mel, MFCC and stats carry a class-dependent offset."""
    rng = np.random.default_rng(seed)
    rows = []
    for speaker in range(n_speakers):
        for label_index, label in enumerate(LABELS + ("calm",)):
            for clip in range(clips_per_label):
                path = f"file:/corpus/s{speaker}/{label}_{clip}.wav"
                for augmentation in (None, "gain+2.0db") if augmented else (None,):
                    log_mel = rng.normal(-40 + 5 * label_index, 3, (N_MELS, N_FRAMES))
                    log_mel[label_index] += 15
                    mfcc = rng.normal(label_index, 1, (N_MFCC, N_FRAMES))
                    stats = rng.normal(0, 1, N_STATS) + np.eye(N_STATS)[label_index] * 3
                    rows.append({
                        "clip_id": f"{speaker:02d}{label}{clip}" + ("#aug0" if augmentation else ""),
                        "path": path, "corpus": "synth", "speaker": str(speaker), "label": label,
                        "augmentation": augmentation,
                        "log_mel": log_mel.ravel().astype(np.float32), "log_mel_shape": [N_MELS, N_FRAMES],
                        "mfcc": mfcc.ravel().astype(np.float32), "mfcc_shape": [N_MFCC, N_FRAMES],
                        "stats": stats.astype(np.float32),
                        "feature_config_version": FEATURE_CONFIG.version(),
                    })
    return pd.DataFrame(rows)


def basic4(model: str, *, folds: int = 1, cnn: CnnConfig = TINY_CNN) -> TrainConfig:
    return TrainConfig(model=model, taxonomy="basic4", seed=3, split=SplitConfig(folds=folds, test_fraction=0.34), cnn=cnn)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


def test_logreg_holdout_bundle_round_trip(frame: pd.DataFrame, tmp_path: Path) -> None:
    result = train_from_frame(frame, basic4("logreg"), feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path)
    for name in (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, CONFUSION_PLOT, RELIABILITY_PLOT):
        assert (tmp_path / name).is_file()
    assert result["labels"] == list(LABELS)
    assert result["metrics"]["ua"] > 0.9  # the synthetic classes are easy
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model_kind"] == "logreg"
    assert config["feature_config"] == FEATURE_CONFIG.to_dict()
    assert config["training"]["data"]["taxonomy_report"]["dropped"] == {"calm": 36}
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert "speaker-independent" in metrics["split"]["description"]
    # the holdout's temperature, fitted on speakers held out of its training side, is the bundle's
    holdout = metrics["holdout"]["calibration"]
    assert holdout["held_out_clips"] > 0 and set(holdout["before"]) == set(holdout["after"]) == {"ece", "brier"}
    assert config["calibration"] == metrics["calibration"]["bundle"]
    assert config["calibration"]["temperature"] == pytest.approx(holdout["temperature"])
    pooled = metrics["calibration"]["pooled"]
    assert pooled["after"]["ece"] == pytest.approx(holdout["after"]["ece"])
    assert sum(pooled["before"]["bins"]["count"]) == metrics["pooled"]["n"]
    bundle = load_bundle(tmp_path)
    assert bundle.temperature == config["calibration"]["temperature"]
    np.testing.assert_allclose(bundle.predict_proba(feature_batch(frame, ["stats"])),
                               apply_temperature(bundle.model.predict_proba(feature_batch(frame, ["stats"])["stats"]),
                                                 bundle.temperature), atol=1e-6)
    probabilities = bundle.predict_proba(feature_batch(frame, ["stats"]))
    assert probabilities.shape == (len(frame), 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(probabilities, load_bundle(tmp_path).predict_proba(feature_batch(frame, ["stats"])))
    rebuilt = load_bundle_from_files(bundle.files, source=str(tmp_path))
    assert sorted(bundle.files) == [CONFIG_FILE, WEIGHTS_FILE] and rebuilt.config == bundle.config
    assert np.array_equal(probabilities, rebuilt.predict_proba(feature_batch(frame, ["stats"])))


def test_cnn_kfold_bundle_round_trip_and_evaluation(frame: pd.DataFrame, tmp_path: Path) -> None:
    cnn = replace(TINY_CNN, inputs=("log_mel", "mfcc"))
    result = train_from_frame(frame, basic4("cnn", folds=3, cnn=cnn), feature_config=FEATURE_CONFIG.to_dict(),
                              output_dir=tmp_path / "bundle")
    assert set(result["metrics"]["ua"]) == {"mean", "std", "values"}
    assert len(result["metrics"]["ua"]["values"]) == 3
    metrics = json.loads((tmp_path / "bundle" / METRICS_FILE).read_text())
    assert [fold["name"] for fold in metrics["folds"]] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert "refit on all" in metrics["final_model"]
    assert (tmp_path / "bundle" / CURVES_PLOT).is_file() and (tmp_path / "bundle" / RELIABILITY_PLOT).is_file()
    calibration = metrics["calibration"]
    assert [fold["calibration"]["held_out_clips"] > 0 for fold in metrics["folds"]] == [True] * 3
    assert calibration["summary"]["after"]["ece"]["values"] == [
        fold["calibration"]["after"]["ece"] for fold in metrics["folds"]
    ]
    assert set(calibration["pooled"]) == {"before", "after"} and len(calibration["pooled"]["after"]["bins"]["count"]) == 15
    # the refit holds no speakers out: its temperature comes from the folds' held-out speakers
    assert "folds" in calibration["bundle"]["fitted_on"]
    assert calibration["bundle"]["fitted_on_clips"] == sum(fold["calibration"]["held_out_clips"] for fold in metrics["folds"])
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.inputs == ("log_mel", "mfcc")
    batch = feature_batch(frame.iloc[:10], ["log_mel", "mfcc", "stats"])
    np.testing.assert_array_equal(bundle.predict_proba(batch), load_bundle(tmp_path / "bundle").predict_proba(batch))

    evaluation = evaluate_frame(frame, bundle, tmp_path / "eval", feature_config=FEATURE_CONFIG.to_dict())
    assert evaluation["metrics"]["n"] == 72  # originals of the four basic4 labels
    assert evaluation["augmented"]["n"] == 72
    assert len(evaluation["speakers_seen_in_training"]) == 6
    matrix = np.array(evaluation["metrics"]["confusion_matrix"]["matrix"])
    title = evaluation["matrix_title"]  # the title says what the cells hold, and that speakers were seen
    assert matrix.sum() == 72 and title.startswith("cnn (bundle): 72 clips of 6 speakers; their 72 augmented copies")
    assert "6 of these 6 speakers were in the training data: not speaker-independent" in title
    predictions = pd.read_parquet(tmp_path / "eval" / PREDICTIONS_FILE)
    assert len(predictions) == 144 and {"predicted", "prob_angry"} <= set(predictions.columns)
    assert predictions["prob_angry"].dtype == np.float64
    assert (tmp_path / "eval" / EVALUATION_FILE).is_file()


def test_cnn_ensemble_trains_each_member_and_round_trips(frame: pd.DataFrame, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    train_from_frame(frame, basic4("cnn", cnn=replace(TINY_CNN, ensemble=2)), feature_config=FEATURE_CONFIG.to_dict(),
                     output_dir=tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["architecture"]["members"] == 2
    assert list(config["training"]["histories"]) == ["holdout member 1/2", "holdout member 2/2"]
    assert {name.split(".")[1] for name in load_file(str(tmp_path / WEIGHTS_FILE))} == {"0", "1"}
    bundle = load_bundle(tmp_path)
    batch = feature_batch(frame.iloc[:12], ["log_mel"])
    first, second = (cnn_predict_proba(member, batch["log_mel"]) for member in bundle.model.members)
    assert np.abs(first - second).max() > 1e-4
    np.testing.assert_allclose(bundle.predict_proba(batch), apply_temperature((first + second) / 2, bundle.temperature),
                               atol=1e-6)
    np.testing.assert_array_equal(bundle.predict_proba(batch), load_bundle(tmp_path).predict_proba(batch))


def test_cnn_fused_with_speaker_standardised_stats_round_trips(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    cnn = replace(TINY_CNN, stats_fusion_weight=0.4, stats_normalisation="speaker", stats_regularisation_search=(0.01, 1.0))
    train_from_frame(frame, basic4("cnn", cnn=cnn), feature_config=FEATURE_CONFIG.to_dict(), output_dir=path)
    config = json.loads((path / CONFIG_FILE).read_text())
    # a holdout split fits once; the fused stats model's C was chosen among the search's values
    assert len(config["training"]["stats_regularisation_c_chosen"]) == 1
    assert config["training"]["stats_regularisation_c_chosen"][0] in (0.01, 1.0)
    assert config["inputs"] == ["log_mel", "stats"] and config["stats_normalisation"] == "speaker"
    assert config["stats_fusion"] == {"weight": 0.4, "n_stats": N_STATS}
    assert set(config["weights_sha256"]) == {WEIGHTS_FILE, STATS_MODEL_FILE}
    bundle = load_bundle(path)
    mapped = frame[frame["label"].isin(LABELS)].reset_index(drop=True)
    # each speaker's original clips and its augmented copies are standardised apart, as in training
    batch, groups = feature_batch(mapped, ["log_mel", "stats"]), standardisation_groups(mapped)
    with pytest.raises(UserError, match="several clips per speaker"):
        bundle.predict_proba(batch)
    fused = bundle.predict_proba(batch, groups)
    cnn_alone = cnn_predict_proba(bundle.model, batch["log_mel"])
    stats_alone = bundle.stats_model.predict_proba(speaker_standardise(batch["stats"], groups))
    fused_model = fuse_probabilities(cnn_alone, stats_alone, 0.4)
    np.testing.assert_allclose(fused, apply_temperature(fused_model, bundle.temperature), atol=1e-6)
    assert np.abs(fused_model - cnn_alone).max() > 1e-2
    np.testing.assert_array_equal(fused, load_bundle(path).predict_proba(batch, groups))
    assert sorted(bundle.files) == [CONFIG_FILE, WEIGHTS_FILE, STATS_MODEL_FILE]
    np.testing.assert_array_equal(fused, load_bundle_from_files(bundle.files, source=str(path)).predict_proba(batch, groups))
    # Evaluation batches by speaker, so any batch size gives the whole table's figures.
    np.testing.assert_allclose(predict_frame(bundle, mapped, batch_rows=7), fused, atol=1e-6)
    # Call scoring: one speaker's clips as one channel adapt as evaluation does; without adaptation
    # it is the CNN alone through its own temperature, fitted on the same held-out speakers.
    fallback_t = config["calibration"]["fallback_temperature"]
    assert fallback_t > 0 and bundle.fallback_temperature == fallback_t
    call_model = CallModel(bundle)
    speaker = groups == groups[0]
    outputs = call_model.window_outputs({name: values[speaker] for name, values in batch.items()})
    np.testing.assert_allclose(call_model.channel_probabilities(outputs, adapt=True), fused[speaker], atol=1e-5)
    np.testing.assert_allclose(call_model.channel_probabilities(outputs, adapt=False),
                               apply_temperature(cnn_alone[speaker], fallback_t), atol=1e-6)

    bad_weight = _copy(path, tmp_path / "bad-weight")
    _edit_config(bad_weight, stats_fusion={"weight": 1.5, "n_stats": N_STATS})
    with pytest.raises(UserError, match="stats_fusion.weight"):
        load_bundle(bad_weight)
    no_stats_model = _copy(path, tmp_path / "no-stats-model")
    (no_stats_model / STATS_MODEL_FILE).unlink()
    with pytest.raises(UserError, match=STATS_MODEL_FILE):
        load_bundle(no_stats_model)


def test_a_fusion_weight_search_chooses_each_folds_weight_on_its_held_out_speakers(frame: pd.DataFrame, tmp_path: Path,
                                                                                   caplog) -> None:
    cnn = replace(TINY_CNN, stats_fusion_weight=0.4, stats_normalisation="speaker", stats_fusion_weight_search=(0.2, 0.6))
    with caplog.at_level(logging.INFO, logger="training"):
        train_from_frame(frame, basic4("cnn", folds=3, cnn=cnn), feature_config=FEATURE_CONFIG.to_dict(),
                         output_dir=tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    chosen = config["training"]["stats_fusion_weight_chosen"]
    logged = [float(line.split("fusion weight ")[1].split(" ")[0]) for line in caplog.messages if "held-out clips" in line]
    # one choice per fold, then the refit (which holds out nobody) takes their median
    assert len(chosen) == 4 and chosen[:3] == logged and set(logged) <= {0.2, 0.6}
    assert chosen[3] == float(np.median(logged)) and config["stats_fusion"]["weight"] == chosen[3]
    assert load_bundle(tmp_path).fused_model.weight == chosen[3]
    with pytest.raises(ValueError, match="stats_fusion_weight_search"):
        replace(TINY_CNN, stats_fusion_weight_search=(0.2, 0.6))
    with pytest.raises(ValueError, match="stats_fusion_weight_search"):
        replace(cnn, stats_fusion_weight_search=(0.2, 1.0))


def test_cnn_fused_with_per_corpus_stats_weights_round_trips(tmp_path: Path) -> None:
    second = synthetic_frame(n_speakers=4, augmented=False, seed=1).assign(corpus="other")
    frame = pd.concat([synthetic_frame(n_speakers=4, augmented=False), second], ignore_index=True)
    cnn = replace(TINY_CNN, stats_fusion_weight=0.4, stats_normalisation="global", stats_per_corpus_weights=True)
    train_from_frame(frame, basic4("cnn", cnn=cnn), feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / CONFIG_FILE).read_text())
    assert config["stats_fusion"] == {"weight": 0.4, "n_stats": N_STATS, "corpora": ["other", "synth"]}
    bundle = load_bundle(tmp_path / "bundle")
    mapped = frame[frame["label"].isin(LABELS)].reset_index(drop=True)
    batch, corpora = feature_batch(mapped, ["log_mel", "stats"]), mapped["corpus"].to_numpy()
    cnn_alone = cnn_predict_proba(bundle.model, batch["log_mel"])
    own = fuse_probabilities(cnn_alone, bundle.stats_model.predict_proba(batch["stats"], corpora), 0.4)
    np.testing.assert_allclose(bundle.predict_proba(batch, corpora=corpora), apply_temperature(own, bundle.temperature),
                               atol=1e-6)
    np.testing.assert_allclose(predict_frame(bundle, mapped, batch_rows=5), bundle.predict_proba(batch, corpora=corpora),
                               atol=1e-6)
    # without a corpus (a call), the mean of the corpora's weights
    mean = fuse_probabilities(cnn_alone, bundle.stats_model.predict_proba(batch["stats"]), 0.4)
    np.testing.assert_allclose(bundle.predict_proba(batch), apply_temperature(mean, bundle.temperature), atol=1e-6)
    assert np.abs(own - mean).max() > 1e-3
    edited = _copy(tmp_path / "bundle", tmp_path / "edited")
    _edit_config(edited, stats_fusion={"weight": 0.4, "n_stats": N_STATS, "corpora": "other"})
    with pytest.raises(UserError, match="stats_fusion.corpora"):
        load_bundle(edited)


def test_speaker_standardised_logreg_removes_speaker_offsets(tmp_path: Path) -> None:
    frame = synthetic_frame(n_speakers=8, augmented=False)
    offsets = np.random.default_rng(5).normal(0, 6, (8, N_STATS))
    frame["stats"] = [stats + offsets[int(speaker)] for stats, speaker in zip(frame["stats"], frame["speaker"])]
    ua = {}
    for normalisation in ("global", "speaker"):
        config = replace(basic4("logreg", folds=4), logreg=LogregConfig(normalisation=normalisation))
        result = train_from_frame(frame, config, feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path / normalisation)
        ua[normalisation] = result["metrics"]["ua"]["mean"]
    assert ua["speaker"] > 0.9 and ua["speaker"] > ua["global"] + 0.15, ua
    bundle = load_bundle(tmp_path / "speaker")
    assert bundle.needs_speaker_groups and not load_bundle(tmp_path / "global").needs_speaker_groups
    evaluation = evaluate_frame(frame, load_bundle(tmp_path / "speaker"), tmp_path / "eval", feature_config=FEATURE_CONFIG.to_dict())
    assert evaluation["metrics"]["ua"] > 0.9


def test_a_regularisation_search_chooses_c_over_each_fits_own_speakers(tmp_path: Path, caplog) -> None:
    frame = synthetic_frame(n_speakers=8, augmented=False)
    config = replace(basic4("logreg", folds=4), logreg=LogregConfig(regularisation_search=(0.01, 1.0), search_folds=3))
    with caplog.at_level("INFO", logger="training.models.logreg"):
        result = train_from_frame(frame, config, feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path)
    chosen = [line for line in caplog.messages if "chosen over" in line]
    # one search per fold (6 training speakers each) and one for the bundle's fit on all 8
    assert sum("over 3 folds of 6 speakers" in line for line in chosen) == 4
    assert sum("over 3 folds of 8 speakers" in line for line in chosen) == 1 and len(chosen) == 5
    assert result["metrics"]["ua"]["mean"] > 0.5
    # the bundle records each fit's C in fit order (four folds, then the bundle's refit), as logged
    record = json.loads((tmp_path / "config.json").read_text())["training"]
    logged = [float(line.split("C = ")[1].split(" ")[0]) for line in chosen]
    assert record["regularisation_c_chosen"] == logged and set(logged) <= {0.01, 1.0}
    plain = train_from_frame(frame, basic4("logreg", folds=4), feature_config=FEATURE_CONFIG.to_dict(),
                             output_dir=tmp_path / "plain")
    assert "regularisation_c_chosen" not in json.loads((Path(plain["bundle_dir"]) / "config.json").read_text())["training"]


def test_per_corpus_weights_through_training_bundle_and_evaluation(tmp_path: Path) -> None:
    """Two corpora whose stats put the same classes' cue in different places: with weights of
    each corpus's own the bundle keeps both, and evaluation picks them by each row's corpus."""
    first, second = synthetic_frame(n_speakers=6, augmented=False), synthetic_frame(n_speakers=6, augmented=False, seed=1)
    second["corpus"] = "other"
    # class k's cue at stat k + 1 (mod 5) there: the same stat means another class in each corpus
    second["stats"] = [np.concatenate([np.roll(stats[:5], 1), stats[5:]]) for stats in second["stats"]]
    frame = pd.concat([first, second], ignore_index=True)
    ua = {}
    for own in (False, True):
        config = replace(basic4("logreg", folds=3), logreg=LogregConfig(per_corpus_weights=own))
        ua[own] = train_from_frame(frame, config, feature_config=FEATURE_CONFIG.to_dict(),
                                   output_dir=tmp_path / str(own))["metrics"]["ua"]["mean"]
    assert ua[True] > 0.75 and ua[True] > ua[False] + 0.2, ua  # about 0.85 (each corpus alone too) against 0.5
    record = json.loads((tmp_path / "True" / CONFIG_FILE).read_text())
    assert record["architecture"]["corpora"] == ["other", "synth"]
    assert "corpora" not in json.loads((tmp_path / "False" / CONFIG_FILE).read_text())["architecture"]
    bundle = load_bundle(tmp_path / "True")
    seen = evaluate_frame(frame, bundle, tmp_path / "seen", feature_config=FEATURE_CONFIG.to_dict())
    unseen = predict_frame(bundle, frame.assign(corpus="elsewhere"))  # the mean of the two corpora's weights
    assert seen["metrics"]["ua"] > 0.85  # rows it was trained on
    assert not np.allclose(predict_frame(bundle, frame), unseen)
    edited = _copy(tmp_path / "True", tmp_path / "edited")
    _edit_config(edited, architecture={"n_stats": N_STATS})
    with pytest.raises(UserError, match="no corpora are named"):
        load_bundle(edited)


@pytest.fixture(scope="module")
def logreg_bundle(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logreg")
    train_from_frame(frame, basic4("logreg"), feature_config=FEATURE_CONFIG.to_dict(), output_dir=path)
    return path


def test_feature_config_mismatch_is_refused(frame: pd.DataFrame, logreg_bundle: Path, tmp_path: Path) -> None:
    other = FeatureConfig(mel=MelConfig(n_mels=64))
    relabelled = frame.assign(feature_config_version=other.version())
    with pytest.raises(UserError, match=r"mel\.n_mels: 12 here, 64 there"):
        evaluate_frame(relabelled, load_bundle(logreg_bundle), tmp_path, feature_config=other.to_dict())
    with pytest.raises(UserError, match="re-extract"):
        load_bundle(logreg_bundle).check_feature_config(other, source="the scoring job")
    load_bundle(logreg_bundle).check_feature_config(FEATURE_CONFIG.to_dict(), source="the scoring job")


def test_table_and_manifest_disagreeing_is_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="manifest"):
        train_from_frame(frame, basic4("logreg"), feature_config=FeatureConfig().to_dict(), output_dir=tmp_path)


def _copy(bundle: Path, destination: Path) -> Path:
    destination.mkdir()
    for item in bundle.iterdir():
        (destination / item.name).write_bytes(item.read_bytes())
    return destination


def _edit_config(path: Path, **changes: object) -> None:
    config = json.loads((path / CONFIG_FILE).read_text())
    config.update(changes)
    (path / CONFIG_FILE).write_text(json.dumps(config))


def test_incomplete_or_tampered_bundles_are_refused(logreg_bundle: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    missing = _copy(logreg_bundle, tmp_path / "missing")
    (missing / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="incomplete: model.safetensors missing"):
        load_bundle(missing)

    unknown = _copy(logreg_bundle, tmp_path / "unknown")
    _edit_config(unknown, model_kind="svm")
    with pytest.raises(UserError, match="unknown model kind 'svm'"):
        load_bundle(unknown)

    edited = _copy(logreg_bundle, tmp_path / "edited")
    config = json.loads((edited / CONFIG_FILE).read_text())
    config["feature_config"]["mel"]["n_mels"] = 40
    _edit_config(edited, feature_config=config["feature_config"])
    with pytest.raises(UserError, match="was edited"):
        load_bundle(edited)

    reshaped = _copy(logreg_bundle, tmp_path / "reshaped")
    tensors = load_file(reshaped / WEIGHTS_FILE)
    tensors["coef"] = tensors["coef"][:3]
    save_file(tensors, reshaped / WEIGHTS_FILE)
    with pytest.raises(UserError, match="'coef' has shape"):
        load_bundle(reshaped)

    corrupt = _copy(logreg_bundle, tmp_path / "corrupt")
    (corrupt / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read model.safetensors"):
        load_bundle(corrupt)

    with pytest.raises(UserError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_bundle_with_tampered_or_missing_calibration_is_refused(logreg_bundle: Path, tmp_path: Path) -> None:
    calibration = json.loads((logreg_bundle / CONFIG_FILE).read_text())["calibration"]

    tampered = _copy(logreg_bundle, tmp_path / "tampered")
    _edit_config(tampered, calibration={**calibration, "temperature": calibration["temperature"] * 2})
    with pytest.raises(UserError, match="calibration was edited after training"):
        load_bundle(tampered)

    missing = _copy(logreg_bundle, tmp_path / "missing")
    config = json.loads((missing / CONFIG_FILE).read_text())
    del config["calibration"]
    (missing / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(UserError, match="calibration_sha256 but no calibration"):
        load_bundle(missing)

    # a bundle from before calibration (neither entry) loads, and predicts the model's own probabilities
    older = _copy(logreg_bundle, tmp_path / "older")
    config = json.loads((older / CONFIG_FILE).read_text())
    del config["calibration"], config["calibration_sha256"]
    (older / CONFIG_FILE).write_text(json.dumps(config))
    bundle = load_bundle(older)
    stats = np.random.default_rng(0).normal(0, 1, (5, N_STATS)).astype(np.float32)
    assert bundle.temperature is None
    np.testing.assert_array_equal(bundle.predict_proba({"stats": stats}), bundle.model.predict_proba(stats))


def test_cnn_bundle_with_wrong_tensor_shape_is_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    train_from_frame(frame, basic4("cnn"), feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path / "cnn")
    tensors = load_file(str(tmp_path / "cnn" / WEIGHTS_FILE))
    tensors["classifier.weight"] = torch.zeros(5, tensors["classifier.weight"].shape[1])
    save_file(tensors, str(tmp_path / "cnn" / WEIGHTS_FILE))
    with pytest.raises(UserError, match=r"classifier\.weight \[5, 16\] \(expected \[4, 16\]\)"):
        load_bundle(tmp_path / "cnn")


def test_rows_without_speaker_refuse_a_speaker_split(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no speaker"):
        train_from_frame(frame.assign(speaker=None), basic4("logreg"), feature_config=FEATURE_CONFIG.to_dict(),
                         output_dir=tmp_path)


@pytest.mark.parametrize("model", ["logreg", "cnn"])
def test_conf_files_match_the_defaults(model: str) -> None:
    from ser_udfs.settings import resolve_config

    conf = Path(__file__).resolve().parents[1] / "conf" / f"train_{model}.toml"
    assert resolve_config(TrainConfig, conf) == TrainConfig(model=model)


def test_a_table_of_two_corpora_reports_each_corpus_per_fold_and_over_the_folds(tmp_path: Path) -> None:
    first, second = synthetic_frame(n_speakers=4, augmented=False), synthetic_frame(n_speakers=3, augmented=False, seed=1)
    second["corpus"] = "other"
    second["stats"] = [values[::-1].copy() for values in second["stats"]]  # another corpus, other cues
    frame = pd.concat([first, second], ignore_index=True)
    result = train_from_frame(frame, basic4("logreg", folds=3), feature_config=FEATURE_CONFIG.to_dict(), output_dir=tmp_path)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert set(result["per_corpus"]) == {"synth", "other"}
    for fold in metrics["folds"]:
        tested = {key.split("/")[0] for key in fold["test_speakers"]}
        assert set(fold["per_corpus"]) == tested  # only the corpora the fold tests
        for corpus, figures in fold["per_corpus"].items():
            assert figures["n"] == sum(1 for key in fold["test_speakers"] if key.startswith(corpus + "/")) * 3 * 4
    for corpus, summary in metrics["summary_per_corpus"].items():
        assert summary["folds"] == sum(corpus in fold["per_corpus"] for fold in metrics["folds"])
        assert result["per_corpus"][corpus]["mean"] == pytest.approx(summary["ua"]["mean"])
    single = train_from_frame(first, basic4("logreg", folds=3), feature_config=FEATURE_CONFIG.to_dict(),
                              output_dir=tmp_path / "one")
    assert single["per_corpus"] == {} and "summary_per_corpus" not in json.loads((tmp_path / "one" / METRICS_FILE).read_text())
