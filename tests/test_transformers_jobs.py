"""jobs/extract_embeddings.py and jobs/train.py with transformer models, in local-mode Spark.

The features table is written here directly (waveforms of synthetic tones, the layout of
``docs/CONTRACTS.md``), and the encoder is a tiny random model saved to a temporary folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs import evaluate, extract_embeddings, train
from jobs._cli import run
from ser_udfs.encoders.pooling import pooled_hidden_states
from training.bundle.load import load_bundle
from ser_udfs.encoders.loading import load_encoder
from tests.builders import ENCODER_SAMPLE_RATE, WAVEFORM_FEATURE_CONFIG, embedding_head_config, save_tiny_encoder, synthetic_waveform_frame


pytestmark = pytest.mark.spark
torch.set_num_threads(1)

STRING_COLUMNS = ("clip_id", "path", "speaker", "gender", "label", "raw_label", "augmentation", "feature_config_version")


def write_features_table(frame: pd.DataFrame, output: Path, *, with_waveform: bool = True) -> Path:
    """An extraction output: ``features/corpus=.../*.parquet``, ``_manifest.json`` and ``_SUCCESS``."""
    for corpus, rows in frame.groupby("corpus"):
        columns = {name: pa.array(rows[name].tolist(), type=pa.string()) for name in STRING_COLUMNS}
        if with_waveform:
            columns["waveform"] = pa.array([np.asarray(v, np.float32) for v in rows["waveform"]], pa.list_(pa.float32()))
        folder = output / "features" / f"corpus={corpus}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table(columns), folder / "part-00000.parquet")
    manifest = {"job": "extract_features", "feature_config": WAVEFORM_FEATURE_CONFIG.to_dict(),
                "feature_config_version": WAVEFORM_FEATURE_CONFIG.version()}
    (output / "_manifest.json").write_text(json.dumps(manifest))
    (output / "_SUCCESS").write_text("")
    return output


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_waveform_frame()


@pytest.fixture(scope="module")
def table(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_features_table(frame, tmp_path_factory.mktemp("features") / "table")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def embeddings(spark, table: Path, encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("embeddings") / "table"
    argv = ["--input", str(table), "--pretrained", str(encoder_dir), "--output", str(output), "--log-level", "WARNING",
            "--set", "embedding.layers=[0, -1]", "--set", "embedding.batch_size=3", "--set", "embedding.device=\"cpu\"",
            "--set", "embedding.rows_per_partition=10"]
    assert extract_embeddings.main(argv) == 0
    return output


def test_embeddings_job_writes_the_pooled_hidden_states(embeddings: Path, frame: pd.DataFrame,
                                                        encoder_dir: Path) -> None:
    manifest = json.loads((embeddings / "_manifest.json").read_text())
    assert (embeddings / "_SUCCESS").exists()
    assert manifest["counts"] == {"clips": len(frame), "rows_written": len(frame)}
    assert manifest["embedding_shape"] == [2, 32] and manifest["config"]["embedding"]["layers"] == [0, 2]
    assert manifest["feature_config"] == WAVEFORM_FEATURE_CONFIG.to_dict()
    written = pd.read_parquet(embeddings / "embeddings").set_index("clip_id").loc[frame["clip_id"]]
    assert set(written["corpus"]) == {"synth"} and list(written["label"]) == list(frame["label"])
    assert {tuple(shape) for shape in written["embedding_shape"]} == {(2, 32)}
    assert {tuple(layers) for layers in written["embedding_layers"]} == {(0, 2)}
    assert written["embedding_version"].nunique() == 1
    encoder = load_encoder(str(encoder_dir))
    expected = pooled_hidden_states(encoder.model, encoder.extractor, np.stack(frame["waveform"].to_numpy()),
                                    sample_rate_hz=ENCODER_SAMPLE_RATE, layers=[0, 2])
    np.testing.assert_allclose(np.stack(written["embedding"].to_numpy()), expected.reshape(len(frame), -1), atol=1e-5)


def test_train_job_fits_a_head_on_the_embeddings_table(embeddings: Path, table: Path, encoder_dir: Path,
                                                       tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "head"
    argv = ["--features", str(embeddings), "--model", "embed-logreg", "--pretrained", str(encoder_dir),
            "--layer", "2", "--taxonomy", "basic4", "--folds", "2", "--output", str(bundle), "--log-level", "WARNING",
            "--set", "head.validation_fraction=0.34", "--set", "head.max_epochs=20"]
    assert train.main(argv) == 0
    assert "embed-logreg on basic4" in capsys.readouterr().out
    config = json.loads((bundle / "config.json").read_text())
    assert config["architecture"]["embedding"]["layers"] == [2]
    assert config["training"]["embedding"]["source"] == "embeddings table"
    assert load_bundle(bundle).predict_proba({"waveform": np.zeros((2, 8000), np.float32) + 0.1}).shape == (2, 2)

    status = run(train.main, ["--features", str(embeddings), "--model", "embed-logreg", "--pretrained",
                              str(save_tiny_encoder(tmp_path / "other", seed=5)), "--taxonomy", "basic4",
                              "--output", str(tmp_path / "x")])
    assert status == 2  # another encoder than the table's
    assert "another encoder" in capsys.readouterr().err


def test_train_job_fine_tunes_wav2vec2_and_the_evaluation_job_reads_the_bundle(
    table: Path, encoder_dir: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "wav2vec2"
    argv = ["--features", str(table), "--model", "wav2vec2", "--pretrained", str(encoder_dir), "--taxonomy", "basic4",
            "--folds", "1", "--output", str(bundle), "--log-level", "WARNING",
            "--set", "split.test_fraction=0.25", "--set", "wav2vec2.validation_fraction=0.34",
            "--set", "wav2vec2.max_epochs=6", "--set", "wav2vec2.patience=6", "--set", "wav2vec2.batch_size=4",
            "--set", "wav2vec2.gradient_accumulation_steps=1", "--set", "wav2vec2.learning_rate=0.002",
            "--set", "wav2vec2.head_learning_rate=0.005", "--set", "wav2vec2.mask_time_prob=0.0",
            "--set", "wav2vec2.layerdrop=0.0", "--set", "wav2vec2.classifier_proj_size=8"]
    assert train.main(argv) == 0
    config = json.loads((bundle / "config.json").read_text())
    assert config["model_kind"] == "wav2vec2" and config["inputs"] == ["waveform"]
    losses = config["training"]["histories"]["holdout"]["train_loss"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05  # an easy task: high versus low tones

    report = tmp_path / "report"
    assert evaluate.main(["--features", str(table), "--model", str(bundle), "--output", str(report),
                          "--log-level", "WARNING"]) == 0
    assert json.loads((report / "evaluation.json").read_text())["model"] == "wav2vec2"


def test_jobs_refuse_a_table_without_waveforms(frame: pd.DataFrame, encoder_dir: Path, tmp_path: Path, capsys,
                                               spark) -> None:
    table = write_features_table(frame, tmp_path / "no-waveforms", with_waveform=False)
    status = run(extract_embeddings.main, ["--input", str(table), "--pretrained", str(encoder_dir),
                                            "--output", str(tmp_path / "e")])
    assert status == 2 and "keep_waveform=true" in capsys.readouterr().err
    status = run(train.main, ["--features", str(table), "--model", "wav2vec2", "--pretrained", str(encoder_dir),
                              "--output", str(tmp_path / "b")])
    assert status == 2 and "keep_waveform=true" in capsys.readouterr().err
    status = run(train.main, ["--features", str(table), "--model", "logreg", "--layer", "3",
                              "--output", str(tmp_path / "b")])
    assert status == 2


@pytest.mark.slow
def test_score_job_accepts_a_transformer_bundle(spark, frame: pd.DataFrame, encoder_dir: Path, tmp_path: Path) -> None:
    from jobs import score_calls
    from ser_udfs.synthetic.calls import Turn, synth_call, write_call
    from training.protocol import train_from_frame

    bundle = tmp_path / "bundle"
    config = embedding_head_config()
    config = replace(config, embedding=replace(config.embedding, pretrained=str(encoder_dir)),
                     head=replace(config.head, layer=2))
    train_from_frame(frame, config, feature_config=WAVEFORM_FEATURE_CONFIG.to_dict(), output_dir=bundle)
    call = synth_call([Turn(0, 0.5, 3.0, "angry")], duration_s=4.0, channels=1, seed=2)
    write_call(tmp_path / "calls" / "call.wav", call, 8000)
    status = run(score_calls.main, ["--input", str(tmp_path / "calls"), "--model", str(bundle),
                                    "--output", str(tmp_path / "scores"), "--set", "window.hop_s=0.5",
                                    "--log-level", "WARNING"])
    assert status == 0
    calls = pd.read_parquet(tmp_path / "scores" / "calls")
    assert calls["status"].tolist() == ["ok"] and calls["dominant_emotion"].iloc[0] in ("angry", "sad")
