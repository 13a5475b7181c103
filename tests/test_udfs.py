"""The pandas UDFs of ser_udfs.spark.udfs and training.udfs in local-mode Spark: the extraction
job's values for the same files, a null result and an error struct for a bad file, SQL, and the
example of docs/UDFS.md as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F
import pandas as pd
import pytest

from ser_udfs.features.config import FeatureConfig
from ser_udfs.spark.udfs import features_udf, waveform_udf
from tests.builders import REPO, adaptive_call_bundles, call_bundle, extraction_args, write_small_corpus

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_small_corpus(tmp_path_factory.mktemp("udf-corpus"))  # eight clips, an empty and a silent file
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root


@pytest.fixture(scope="module")
def clips(spark, corpus: Path):
    return spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(corpus)).select(
        "path", "content")


def test_features_equal_the_extraction_jobs_and_bad_files_get_an_error(spark, clips, corpus: Path, tmp_path) -> None:
    from jobs import extract_features
    from jobs._cli import run

    config = FeatureConfig.from_dict({"mel": {"n_mels": 32}})
    got = clips.select("path", features_udf(config)("content").alias("f")).select("path", "f.*").toPandas()
    assert len(got) == 10  # eight clips, the silent and the broken file (the binary file source skips empty files)
    errors = got[got["error"].notna()].set_index("path")["error"]
    kinds = {Path(path).name: error["kind"] for path, error in errors.items()}
    assert kinds == {"silent.wav": "silent", "broken.wav": "decode"}
    assert got.loc[got["error"].notna(), "stats"].isna().all()

    assert run(extract_features.main, extraction_args(corpus, tmp_path / "table")) == 0
    table = pd.read_parquet(tmp_path / "table" / "features").set_index("path")
    good = got[got["error"].isna()].set_index("path")
    assert sorted(good.index) == sorted(table.index)
    for path, row in good.iterrows():
        expected = table.loc[path]
        for column in ("log_mel", "mfcc", "zcr", "stats"):
            np.testing.assert_allclose(np.asarray(row[column]), np.asarray(expected[column]), atol=1e-5, err_msg=column)
        assert list(row["log_mel_shape"]) == list(expected["log_mel_shape"])


def test_waveforms_are_the_preprocessed_clips(spark, clips) -> None:
    config = FeatureConfig()
    rows = clips.select("path", waveform_udf(config)("content").alias("w")).select("path", "w.*").toPandas()
    good = rows[rows["error"].isna()]
    assert len(good) == 8 and all(len(wave) == config.audio.clip_samples for wave in good["waveform"])
    assert set(good["source_sample_rate"]) == {16000} and (good["source_duration_s"] > 0.9).all()


def test_emotion_from_a_bundle_in_pyspark_and_sql(spark, clips, tmp_path) -> None:
    from training.bundle.load import load_bundle
    from training.udfs import emotion

    bundle_dir = call_bundle(tmp_path / "tiny-logreg")
    labels = load_bundle(bundle_dir).labels
    rows = clips.select("path", emotion(bundle_dir)("content").alias("e")).select("path", "e.*").toPandas()
    good = rows[rows["error"].isna()]
    assert len(good) == 8 and set(good["label"]) <= set(labels)
    for row in good.itertuples():
        probabilities = dict(row.probabilities)
        assert set(probabilities) == set(labels) and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row.confidence == pytest.approx(max(probabilities.values())) and row.label == max(probabilities, key=probabilities.get)
    assert rows[rows["error"].notna()]["label"].isna().all()
    spark.udf.register("ser_emotion_test", emotion(bundle_dir))
    clips.createOrReplaceTempView("udf_clips")
    counted = spark.sql("SELECT ser_emotion_test(content).label AS label, count(*) AS n FROM udf_clips GROUP BY 1").toPandas()
    assert counted["n"].sum() == len(rows) and counted["label"].isna().sum() == 1  # the two bad rows share null


def test_a_speaker_adaptive_bundle_scores_each_clip_with_its_cnn_alone(spark, clips, tmp_path) -> None:
    from training.bundle.load import load_bundle
    from training.udfs import ClipPredictor, emotion

    adaptive, _ = adaptive_call_bundles(tmp_path / "bundles")
    rows = clips.select(emotion(adaptive)("content").alias("e")).select("e.*").toPandas()
    assert rows["error"].isna().sum() == 8 and rows["label"].notna().sum() == 8
    bundle = load_bundle(adaptive)
    assert ClipPredictor(bundle).labels == bundle.labels


def test_the_example_of_docs_udfs_runs_as_written(spark, corpus: Path, tmp_path, capsys) -> None:
    text = (REPO / "docs" / "UDFS.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace = {"spark": spark, "clips_dir": corpus / "Actor_01", "bundle_dir": call_bundle(tmp_path / "bundle")}
    exec(compile(block, "docs/UDFS.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "label" in printed and "stats" in printed
    assert len(namespace["lengths"]) == 4 and {row.samples for row in namespace["lengths"]} == {48000}


def test_embeddings_of_the_waveforms_as_the_embeddings_job_computes_them(spark, clips, tmp_path) -> None:
    from ser_udfs.encoders.pooling import EmbeddingConfig, plan_embeddings
    from ser_udfs.spark.udfs import embeddings_udf
    from tests.builders import save_tiny_encoder

    config = EmbeddingConfig(pretrained=str(save_tiny_encoder(tmp_path / "encoder")), batch_size=4)
    waves = clips.select("path", waveform_udf(FeatureConfig())("content").alias("w"))
    embed = embeddings_udf(config)
    rows = waves.select("path", "w.waveform", embed(F.col("w.waveform")).alias("e"),
                        embed(F.slice("w.waveform", 1, 100)).alias("short")).toPandas()
    good = rows[rows["waveform"].notna()]
    bad = rows[rows["waveform"].isna()]
    assert len(good) == 8 and bad["e"].map(lambda e: e["embedding"] is None and e["error"]["kind"] == "empty").all()
    plan = plan_embeddings(config, sample_rate_hz=16000)
    expected = plan.factory()()(np.stack([np.asarray(wave, np.float32) for wave in good["waveform"]]))
    got = np.stack([np.asarray(e["embedding"]) for e in good["e"]])
    np.testing.assert_allclose(got, expected.reshape(len(good), -1), atol=1e-5)
    assert good["short"].map(lambda e: e["error"] is None).all()  # clips of one (short) length: embedded too


def test_features_and_emotion_from_a_waveform_column_equal_those_from_the_bytes(spark, clips, tmp_path) -> None:
    from ser_udfs.errors import UserError
    from training.bundle.load import load_bundle
    from training.udfs import emotion

    bundle_dir = call_bundle(tmp_path / "tiny-logreg")
    config = load_bundle(bundle_dir).feature_config
    waves = clips.select("path", "content", waveform_udf(config)("content").alias("w"))
    rows = waves.select(
        "path",
        features_udf(config)("content").stats.alias("from_bytes"),
        features_udf(config, source="waveform")(F.col("w.waveform")).alias("f"),
        emotion(bundle_dir)("content").probabilities.alias("p_bytes"),
        emotion(bundle_dir, source="waveform")(F.col("w.waveform")).probabilities.alias("p_wave"),
        features_udf(config, source="waveform")(F.slice("w.waveform", 1, 100)).error.kind.alias("short"),
    ).toPandas()
    good = rows[rows["from_bytes"].notna()]
    assert len(good) == 8
    for row in good.itertuples():
        np.testing.assert_allclose(np.asarray(row.f["stats"]), np.asarray(row.from_bytes), atol=1e-6)
        assert dict(row.p_wave) == pytest.approx(dict(row.p_bytes), abs=1e-6)
    bad = rows[rows["from_bytes"].isna()]
    assert (bad["f"].map(lambda f: f["error"]["kind"]) == "empty").all()  # a null waveform: its clip failed
    assert set(good["short"]) == {"unsupported"}
    with pytest.raises(UserError, match="bytes"):
        features_udf(config, source="mp3")


def test_emotion_from_a_features_struct_equals_emotion_from_the_bytes(spark, clips, tmp_path) -> None:
    from training.bundle.load import load_bundle
    from training.udfs import emotion

    adaptive, _ = adaptive_call_bundles(tmp_path / "bundles")  # a CNN fused with stats: maps and stats
    config = load_bundle(adaptive).feature_config
    features = clips.select("content", features_udf(config)("content").alias("f"))
    other = FeatureConfig.from_dict({**config.to_dict(), "mel": {**config.to_dict()["mel"], "n_mels": 32}})
    rows = features.select(
        emotion(adaptive)("content").probabilities.alias("p_bytes"),
        emotion(adaptive, source="features")("f").alias("e"),
        emotion(adaptive, source="features")(features_udf(other)("content")).error.kind.alias("other_config"),
    ).toPandas()
    good = rows[rows["p_bytes"].notna()]
    assert len(good) == 8
    for row in good.itertuples():
        assert dict(row.e["probabilities"]) == pytest.approx(dict(row.p_bytes), abs=1e-6)
    bad = rows[rows["p_bytes"].isna()]
    assert sorted(bad["e"].map(lambda e: e["error"]["kind"])) == ["decode", "silent"]  # the features' own errors
    assert set(good["other_config"]) == {"unsupported"}


def test_a_model_that_reads_waveforms_is_refused_a_features_struct(monkeypatch) -> None:
    from types import SimpleNamespace

    from ser_udfs.errors import UserError
    from training import udfs

    wav2vec2 = SimpleNamespace(path=Path("w2v"), model_kind="wav2vec2", inputs=("waveform",))
    monkeypatch.setattr(udfs, "load_scoring_model", lambda _: wav2vec2)
    monkeypatch.setattr(udfs, "ClipPredictor", lambda bundle: None)
    with pytest.raises(UserError, match="reads waveforms, which a features struct does not hold"):
        udfs.emotion("w2v", source="features")


def test_feature_config_from_the_jobs_toml() -> None:
    from jobs._cli import CONF_DIR

    config = FeatureConfig.from_toml(CONF_DIR / "features.toml", ["mel.n_mels=32"])
    assert config == FeatureConfig.from_dict({"mel": {"n_mels": 32}})


def test_arrow_batches_are_worked_on_in_bounded_slices() -> None:
    from ser_udfs.spark.udfs import CHUNK_ROWS, _chunks

    batches = [pd.Series(range(70)), pd.Series(range(5)), pd.DataFrame({"a": range(33)})]
    slices = list(_chunks(iter(batches)))
    assert [len(part) for part in slices] == [32, 32, 6, 5, 32, 1] and max(map(len, slices)) == CHUNK_ROWS
    assert pd.concat(slices[:3]).tolist() == list(range(70))
