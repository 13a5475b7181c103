"""Local-mode Spark tests of jobs/extract_features.py on generated audio."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jobs import extract_features
from ser_udfs.synthetic.speech import synth_utterance, write_demo_corpus

pytestmark = pytest.mark.spark


def _write(path: Path, emotion: str = "angry", rate: int = 16000, seconds: float = 1.5, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = synth_utterance(emotion, speaker_seed=1, utterance_seed=len(path.name), sample_rate=rate, duration_s=seconds)
    sf.write(path, np.stack([wave] * channels, axis=1), rate)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_demo_corpus(root / "ravdess", n_actors=2, statements=1, repetitions=1)
    _write(root / "cremad" / "1001_DFA_ANG_XX.wav", rate=22050)
    _write(root / "cremad" / "1002_IEO_SAD_HI.wav", emotion="sad", rate=44100, channels=2)
    (root / "cremad" / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n"
    )
    _write(root / "savee" / "DC_sa01.wav", emotion="sad", rate=44100)
    _write(root / "other dir" / "recording é.WAV", emotion="neutral")
    broken = root / "broken"
    broken.mkdir()
    (broken / "random.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    (broken / "text.flac").write_text("not audio at all")
    (broken / "empty.wav").write_bytes(b"")
    sf.write(broken / "silent.wav", np.zeros(16000, np.float32), 16000)
    (root / "readme.txt").write_text("ignored: not an audio file name")
    return root


def _run(corpus: Path, output: Path, *extra: str) -> int:
    return extract_features.main(["--input", str(corpus), "--output", str(output), "--log-level", "WARNING", *extra])


@pytest.fixture(scope="module")
def extracted(corpus: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("out") / "table"
    assert _run(corpus, output, "--set", "mel.n_mels=64") == 0
    return output


def test_counts_reconcile_and_manifest_is_written_last(extracted: Path) -> None:
    manifest = json.loads((extracted / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["files_listed"] == 30 + 4 + 4
    assert counts["errors"] == 4
    assert counts["clips"] + counts["errors"] == counts["files_listed"]
    assert manifest["config"]["mel"]["n_mels"] == 64
    assert manifest["feature_config"]["mel"]["n_mels"] == 64
    assert (extracted / "_SUCCESS").exists()
    assert not [p for p in extracted.iterdir() if p.name.startswith("_staging")]


def test_feature_rows_carry_labels_and_shapes(extracted: Path) -> None:
    table = pd.read_parquet(extracted / "features")
    assert table["clip_id"].is_unique
    by_name = {Path(unquote(p)).name: row for p, row in zip(table["path"], table.itertuples())}
    crema = by_name["1001_DFA_ANG_XX.wav"]
    assert (crema.corpus, crema.speaker, crema.gender, crema.label, crema.raw_label) == (
        "crema-d", "1001", "male", "angry", "ANG"
    )
    assert by_name["1002_IEO_SAD_HI.wav"].gender == "female"
    assert by_name["1002_IEO_SAD_HI.wav"].source_channels == 2
    assert by_name["1002_IEO_SAD_HI.wav"].source_sample_rate == 44100
    savee = by_name["DC_sa01.wav"]
    assert (savee.corpus, savee.speaker, savee.label) == ("savee", "DC", "sad")
    assert by_name["recording é.WAV"].corpus == "unknown"
    ravdess = table[table["corpus"] == "ravdess"]
    assert set(ravdess["speaker"]) == {"01", "02"}
    assert set(ravdess["gender"]) == {"male", "female"}
    row = ravdess.iloc[0]
    assert list(row["log_mel_shape"]) == [64, 94]
    assert np.asarray(row["log_mel"]).size == 64 * 94
    assert np.asarray(row["mfcc"]).size == 13 * 94
    assert np.isfinite(np.asarray(row["stats"])).all()
    assert row["waveform"] is None
    assert table["feature_config_version"].nunique() == 1


def test_the_table_says_what_its_columns_hold_in_its_parquet_metadata(extracted: Path) -> None:
    import pyarrow.parquet as pq

    from ser_udfs.features.config import FeatureConfig

    metadata = {key.decode(): value.decode() for key, value in
                pq.read_metadata(extracted / "features" / "_common_metadata").metadata.items()}
    manifest = json.loads((extracted / "_manifest.json").read_text())
    assert json.loads(metadata["ser_spark.feature_config"]) == manifest["feature_config"]
    assert metadata["ser_spark.feature_config_version"] == manifest["feature_config_version"]
    row = pd.read_parquet(extracted / "features").iloc[0]
    names = json.loads(metadata["ser_spark.stats_names"])
    assert len(names) == len(row["stats"]) and len(set(names)) == len(names)
    assert names[:2] == ["mfcc_0_mean", "mfcc_1_mean"] and "zcr_std" in names
    config = FeatureConfig.from_dict(manifest["feature_config"])
    assert names.index("log_mel_0_mean") == config.mfcc.n_mfcc * len(config.stats.functions) * (3 if config.mfcc.deltas else 1)
    shapes = json.loads(metadata["ser_spark.shapes"])
    assert {name: shapes[name] for name in ("log_mel", "mfcc", "zcr")} == {
        name: list(row[f"{name}_shape"]) for name in ("log_mel", "mfcc", "zcr")}


def test_errors_table_names_each_broken_file(extracted: Path) -> None:
    errors = pd.read_parquet(extracted / "errors")
    kinds = {Path(unquote(p)).name: k for p, k in zip(errors["path"], errors["error_kind"])}
    assert kinds == {"random.wav": "decode", "text.flac": "decode", "empty.wav": "empty", "silent.wav": "silent"}
    assert errors["error_message"].str.len().min() > 10


def test_rerun_replaces_the_output_cleanly(corpus: Path, tmp_path: Path) -> None:
    output = tmp_path / "again"
    assert _run(corpus, output) == 0
    (output / "features" / "stray.parquet").write_bytes(b"left over from an older run")
    (output / "_staging-deadbeef").mkdir()
    assert _run(corpus, output, "--set", "output.keep_waveform=true") == 0
    table = pd.read_parquet(output / "features")
    assert table["clip_id"].is_unique and len(table) == 34
    assert np.asarray(table.iloc[0]["waveform"]).size == 48000
    assert not (output / "_staging-deadbeef").exists()


def test_manifest_labels_win_over_names(corpus: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,label,speaker,gender,corpus\n"
        f"{corpus}/cremad/1001_DFA_ANG_XX.wav,Happiness,s1,f,mine\n"
        f"{corpus}/other dir/recording é.WAV,,s2,,mine\n"
    )
    output = tmp_path / "manifest-out"
    assert extract_features.main(["--manifest", str(manifest), "--output", str(output), "--log-level", "WARNING"]) == 0
    table = pd.read_parquet(output / "features").sort_values("speaker")
    assert list(table["label"]) == ["happy", None]
    assert list(table["raw_label"]) == ["Happiness", None]
    assert list(table["gender"]) == ["female", None]
    assert set(table["corpus"]) == {"mine"}


def test_user_errors_are_one_sentence(tmp_path: Path, capsys) -> None:
    from jobs._cli import run

    status = run(extract_features.main, ["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    assert status == 2
    assert f"--input {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err  # before Spark starts
    status = run(extract_features.main, ["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", "mel.bands=3"])
    assert status == 2


def test_augmented_copies_are_tagged_rows_of_their_clip(corpus: Path, tmp_path: Path) -> None:
    output = tmp_path / "augmented"
    assert _run(corpus / "cremad", output, "--augment", "2") == 0
    table = pd.read_parquet(output / "features")
    assert len(table) == 2 * 3
    originals = table[table["augmentation"].isna()]
    copies = table[table["augmentation"].notna()]
    assert len(originals) == 2 and len(copies) == 4
    for clip_id in originals["clip_id"]:
        assert set(copies["clip_id"][copies["clip_id"].str.startswith(clip_id)]) == {f"{clip_id}#aug1", f"{clip_id}#aug2"}
    assert set(copies["path"]) == set(originals["path"])
    counts = json.loads((output / "_manifest.json").read_text())["counts"]
    assert counts == {"files_listed": 2, "files_skipped": 0, "clips": 2, "augmented_rows": 4, "feature_rows": 6, "errors": 0}
