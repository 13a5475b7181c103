"""Transformer models on tiny, randomly initialised encoders saved to temporary folders (offline)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ser_udfs.encoders.inputs import encoder_batch, frame_mask, receptive_field, valid_spans
from ser_udfs.encoders.pooling import pooled_hidden_states
from ser_udfs.errors import UserError
from ser_udfs.features.config import AudioConfig, FeatureConfig
from training.bundle.format import CONFIG_FILE, WEIGHTS_FILE
from training.bundle.load import load_bundle
from training.models.embedding_head import EmbeddingHeadTrainConfig
from training.evaluate import evaluate_frame
from ser_udfs.encoders.loading import PretrainedSource, load_encoder
from training.models.hf_classifier import checkpoint_label_sources, load_classifier
from training.splits import SplitConfig
from training.taxonomy import load_taxonomy
from training.models.wav2vec2 import FinetuneConfig, Wav2Vec2TrainConfig
from training.protocol import train_from_frame
from tests.builders import ENCODER_SAMPLE_RATE, WAVEFORM_FEATURE_CONFIG, embedding_head_config, save_tiny_encoder, synthetic_waveform_frame

torch.set_num_threads(1)

EMOTION_LABELS = {0: "ang", 1: "calm", 2: "hap", 3: "neu", 4: "sad", 5: "sur"}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_waveform_frame()


def _waveforms(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame["waveform"].to_numpy())


def _embedding_config(config: EmbeddingHeadTrainConfig, encoder_dir: Path, layer: int | None = None) -> EmbeddingHeadTrainConfig:
    """``config`` on the encoder in ``encoder_dir`` (and head layer ``layer``), as --pretrained and --layer set it."""
    head = config.head if layer is None else replace(config.head, layer=layer)
    return replace(config, embedding=replace(config.embedding, pretrained=str(encoder_dir)), head=head)


# --- label maps ------------------------------------------------------------------------------


def test_checkpoint_labels_map_onto_the_taxonomy() -> None:
    core6 = load_taxonomy("core6")  # angry disgust fear happy neutral sad; calm -> neutral
    sources = checkpoint_label_sources({str(k): v for k, v in EMOTION_LABELS.items()}, core6.labels, core6)
    assert sources == [0, None, None, 2, 3, 4]  # neutral from "neu" (exact), not from "calm"
    without_neutral = {0: "Anger", 1: "Calmness", 2: "HAPPINESS"}
    assert checkpoint_label_sources(without_neutral, core6.labels, core6) == [0, None, None, 2, 1, None]
    assert checkpoint_label_sources({0: "LABEL_0", 1: "LABEL_1"}, core6.labels, core6) == [None] * 6


def test_a_checkpoints_emotion_head_is_remapped(tmp_path: Path) -> None:
    import transformers

    directory = save_tiny_encoder(tmp_path / "emotion", id2label=EMOTION_LABELS)
    checkpoint = transformers.AutoModelForAudioClassification.from_pretrained(directory, local_files_only=True)
    taxonomy = load_taxonomy("core6")
    model, _, report = load_classifier(str(directory), taxonomy.labels, taxonomy, config_overrides={"layerdrop": 0.0},
                                       new_head_overrides={"classifier_proj_size": 8})
    assert model.config.id2label == dict(enumerate(taxonomy.labels))
    assert model.config.layerdrop == 0.0 and model.config.classifier_proj_size == 16  # the reused head keeps its size
    assert report["initialised_from"] == {"angry": "ang", "happy": "hap", "neutral": "neu", "sad": "sad"}
    assert report["new"] == ["disgust", "fear"] and report["dropped"] == ["calm", "sur"]
    old, new = checkpoint.classifier.weight.detach(), model.classifier.weight.detach()
    assert new.shape == (6, old.shape[1])
    for ours, theirs in ((0, 0), (3, 2), (4, 3), (5, 4)):
        torch.testing.assert_close(new[ours], old[theirs])
    torch.testing.assert_close(model.projector.weight, checkpoint.projector.weight)


def test_a_bare_encoder_gets_a_fresh_head(encoder_dir: Path) -> None:
    taxonomy = load_taxonomy("basic4")
    model, _, report = load_classifier(str(encoder_dir), taxonomy.labels, taxonomy, config_overrides={},
                                       new_head_overrides={"classifier_proj_size": 8})
    assert model.classifier.weight.shape == (4, 8)
    assert report["initialised_from"] == {} and report["new"] == list(taxonomy.labels)


# --- loading offline ------------------------------------------------------------------------


def test_missing_folders_and_unreachable_hub_ids_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        PretrainedSource.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no pretrained model given"):
        PretrainedSource.resolve("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load a Hugging Face audio model"):
        load_encoder(str(tmp_path / "empty"))
    source = PretrainedSource.resolve("facebook/wav2vec2-base")
    assert not source.local
    with pytest.raises(UserError, match="may not reach a hub"):  # HF_HUB_OFFLINE=1 in conftest
        load_encoder("facebook/wav2vec2-base")


@pytest.mark.parametrize("model_type", ["wavlm", "hubert"])
def test_other_encoder_families_load_and_embed(model_type: str, tmp_path: Path, frame: pd.DataFrame) -> None:
    encoder = load_encoder(str(save_tiny_encoder(tmp_path / model_type, model_type=model_type)))
    pooled = pooled_hidden_states(encoder.model, encoder.extractor, _waveforms(frame)[:3], sample_rate_hz=ENCODER_SAMPLE_RATE)
    assert pooled.shape == (3, 3, 32) and np.isfinite(pooled).all()


# --- pooling ------------------------------------------------------------------------------


def test_valid_span_and_frame_mask() -> None:
    clips = np.zeros((4, 100), dtype=np.float32)
    clips[0, 40:50] = 1.0
    clips[1, 40:50] = 1.0
    clips[3, [0, 99]] = -0.5
    starts, stops = valid_spans(clips, min_samples=4)
    assert starts.tolist() == [40, 40, 48, 0] and stops.tolist() == [50, 50, 52, 100]
    starts, stops = valid_spans(clips[1:3], min_samples=20)
    assert starts.tolist() == [35, 40] and stops.tolist() == [55, 60]  # widened around the sound / the middle
    starts, stops = valid_spans(clips[:1], min_samples=100)
    assert (starts[0], stops[0]) == (0, 100)
    assert receptive_field((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == 400  # wav2vec2's 25 ms
    mask = frame_mask(np.array([8000, 4000]), n_frames=200, width=8000, conv_kernel=(10, 4), conv_stride=(10, 4))
    assert mask.sum(axis=1).tolist() == [200, 100]


@pytest.mark.parametrize("with_mask", [True, False])
def test_pooling_uses_the_valid_frames_and_does_not_depend_on_the_batch(with_mask: bool, tmp_path: Path,
                                                                         frame: pd.DataFrame) -> None:
    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "e", with_mask=with_mask)))
    waveforms = _waveforms(frame)[:4]
    pooled = pooled_hidden_states(encoder.model, encoder.extractor, waveforms, sample_rate_hz=ENCODER_SAMPLE_RATE, batch_size=4)
    for index in range(4):
        alone = pooled_hidden_states(encoder.model, encoder.extractor, waveforms[index : index + 1],
                                     sample_rate_hz=ENCODER_SAMPLE_RATE)
        np.testing.assert_allclose(alone, pooled[index : index + 1], atol=2e-5)
    # Independently: the model on the clip's valid part alone, mean over all its frames.
    (start,), (stop,) = valid_spans(waveforms[:1], min_samples=40)
    single = encoder.extractor(waveforms[0][start:stop], sampling_rate=ENCODER_SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(single["input_values"], output_hidden_states=True).hidden_states
    if with_mask:  # with zero padding (no mask) the model sees the padding, so only the masked model matches exactly
        expected = torch.stack([state[0].mean(dim=0) for state in hidden]).numpy()
        np.testing.assert_allclose(pooled[0], expected, atol=2e-5)
    last = pooled_hidden_states(encoder.model, encoder.extractor, waveforms, sample_rate_hz=ENCODER_SAMPLE_RATE, layers=[-1])
    np.testing.assert_allclose(last[:, 0], pooled[:, 2], atol=2e-5)
    mixed = pooled_hidden_states(encoder.model, encoder.extractor, waveforms, sample_rate_hz=ENCODER_SAMPLE_RATE,
                                 layers=[0, 2], layer_weights=[1.0, 3.0])
    np.testing.assert_allclose(mixed[:, 0], 0.25 * pooled[:, 0] + 0.75 * pooled[:, 2], atol=2e-5)


def test_mismatched_sample_rate_and_bad_layers_are_refused(encoder_dir: Path, frame: pd.DataFrame) -> None:
    encoder = load_encoder(str(encoder_dir))
    with pytest.raises(UserError, match="expects 16000 Hz audio but the waveforms are at 8000 Hz"):
        encoder_batch(encoder.extractor, _waveforms(frame)[:2], sample_rate_hz=8000, trim_padding=True, min_samples=40)
    with pytest.raises(UserError, match="layer 5 does not exist"):
        pooled_hidden_states(encoder.model, encoder.extractor, _waveforms(frame)[:2], sample_rate_hz=ENCODER_SAMPLE_RATE,
                             layers=[5])
    table_22k = FeatureConfig(audio=AudioConfig(target_sample_rate_hz=22050, clip_seconds=0.5))
    relabelled = frame.assign(feature_config_version=table_22k.version())
    with pytest.raises(UserError, match="target_sample_rate_hz=16000"):
        train_from_frame(relabelled, _embedding_config(embedding_head_config(), encoder_dir),
                         feature_config=table_22k.to_dict(), output_dir="/nonexistent")


# --- bundles -------------------------------------------------------------------------------------


def _wav2vec2_config(encoder_dir: Path, **changes: object) -> Wav2Vec2TrainConfig:
    finetune = FinetuneConfig(max_epochs=2, patience=2, batch_size=4, gradient_accumulation_steps=2,
                              learning_rate=1e-3, classifier_proj_size=8, validation_fraction=0.34,
                              pretrained=str(encoder_dir), **changes)
    return Wav2Vec2TrainConfig(taxonomy="basic4", seed=2, split=SplitConfig(folds=1, test_fraction=0.25),
                               wav2vec2=finetune)


@pytest.mark.parametrize(("model", "layer"), [("embed-logreg", -1), ("embed-mlp", 1)])
def test_embedding_head_bundle_round_trip_and_evaluation(model: str, layer: int, encoder_dir: Path,
                                                         frame: pd.DataFrame, tmp_path: Path) -> None:
    result = train_from_frame(frame, _embedding_config(embedding_head_config(model), encoder_dir, layer),
                              feature_config=WAVEFORM_FEATURE_CONFIG.to_dict(), output_dir=tmp_path / "bundle")
    assert result["model"] == model and result["labels"] == ["angry", "sad"]
    assert len(result["metrics"]["ua"]["values"]) == 2
    config = json.loads((tmp_path / "bundle" / CONFIG_FILE).read_text())
    assert config["model_kind"] == model and config["inputs"] == ["waveform"]
    assert config["architecture"]["embedding"]["layers"] == ([0, 1, 2] if layer == -1 else [1])
    assert (tmp_path / "bundle" / "encoder" / "preprocessor_config.json").is_file()
    bundle = load_bundle(tmp_path / "bundle")
    batch = {"waveform": _waveforms(frame)[:6]}
    probabilities = bundle.predict_proba(batch)
    assert probabilities.shape == (6, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, load_bundle(tmp_path / "bundle").predict_proba(batch), atol=1e-6)
    evaluation = evaluate_frame(frame, bundle, tmp_path / "eval", feature_config=WAVEFORM_FEATURE_CONFIG.to_dict())
    assert evaluation["metrics"]["n"] == len(frame) and evaluation["model"] == model


def test_wav2vec2_bundle_round_trip_and_tampering(encoder_dir: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    result = train_from_frame(frame, _wav2vec2_config(encoder_dir, freeze_layers=1),
                              feature_config=WAVEFORM_FEATURE_CONFIG.to_dict(), output_dir=tmp_path / "bundle")
    assert set(result["metrics"]) == {"accuracy", "ua", "macro_f1"}
    config = json.loads((tmp_path / "bundle" / CONFIG_FILE).read_text())
    assert config["model_kind"] == "wav2vec2"
    assert config["architecture"]["hf_config"]["id2label"] == {"0": "angry", "1": "sad"}
    assert config["training"]["pretrained"] == str(encoder_dir)
    assert len(config["training"]["histories"]["holdout"]["train_loss"]) >= 1
    bundle = load_bundle(tmp_path / "bundle")
    batch = {"waveform": _waveforms(frame)[:5]}
    np.testing.assert_allclose(bundle.predict_proba(batch), load_bundle(tmp_path / "bundle").predict_proba(batch),
                               atol=1e-6)
    with pytest.raises(UserError, match="'waveform' input"):
        bundle.predict_proba({"stats": np.zeros((1, 3))})

    tensors = load_file(str(tmp_path / "bundle" / WEIGHTS_FILE))
    tensors["classifier.weight"] = torch.zeros(3, tensors["classifier.weight"].shape[1])
    save_file(tensors, str(tmp_path / "bundle" / WEIGHTS_FILE))
    with pytest.raises(UserError, match=r"classifier\.weight \[3, 8\] \(expected \[2, 8\]\)"):
        load_bundle(tmp_path / "bundle")


def test_freezing_and_rows_without_waveforms(encoder_dir: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    from training.models.wav2vec2 import freeze_parameters

    taxonomy = load_taxonomy("basic4")
    model, _, _ = load_classifier(str(encoder_dir), taxonomy.labels, taxonomy, config_overrides={},
                                  new_head_overrides={})
    freeze_parameters(model, feature_encoder=True, layers=1)
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert any(name.startswith("wav2vec2.feature_extractor.") for name in frozen)
    assert any(name.startswith("wav2vec2.encoder.layers.0.") for name in frozen)
    assert not any(name.startswith("wav2vec2.encoder.layers.1.") for name in frozen)
    assert not any(name.startswith(("classifier", "projector")) for name in frozen)
    with pytest.raises(UserError, match="only 2 transformer layers"):
        freeze_parameters(model, feature_encoder=True, layers=3)
    with pytest.raises(UserError, match="keep_waveform=true"):
        train_from_frame(frame.drop(columns="waveform"), _wav2vec2_config(encoder_dir),
                         feature_config=WAVEFORM_FEATURE_CONFIG.to_dict(), output_dir=tmp_path)


def test_embedding_head_refuses_an_embeddings_table_of_another_encoder(encoder_dir: Path, frame: pd.DataFrame,
                                                                       tmp_path: Path) -> None:
    table = frame.drop(columns="waveform").assign(
        embedding=[np.zeros(3 * 32, np.float32)] * len(frame), embedding_shape=[[3, 32]] * len(frame),
        embedding_layers=[[0, 1, 2]] * len(frame), embedding_layer_weights=[[]] * len(frame),
        embedding_version="000000000000",
    )
    with pytest.raises(UserError, match="another encoder or settings"):
        train_from_frame(table, _embedding_config(embedding_head_config(), encoder_dir),
                         feature_config=WAVEFORM_FEATURE_CONFIG.to_dict(), output_dir=tmp_path)
