"""The extraction job's two writers: Python workers writing Parquet themselves, and Spark's writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jobs import extract_features
from ser_udfs.spark.extract import ERROR_COLUMNS, FEATURE_COLUMNS_DDL, partition_folder
from ser_udfs.spark.io import keep_received_files
from ser_udfs.synthetic.speech import write_demo_corpus
from tests.torture import extraction_tables
from tests.builders import assert_tables_equal

FEATURE_COLUMNS = [column.split()[0] for column in FEATURE_COLUMNS_DDL.split(", ")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("writer-corpus")
    write_demo_corpus(root / "ravdess", n_actors=2, statements=1, repetitions=1, emotions=["neutral", "angry"])
    other = root / "other"
    other.mkdir()
    sf.write(other / "take 1.wav", np.zeros(8000, np.float32), 16000)  # silent: an error row
    (other / "broken.wav").write_bytes(b"RIFF....WAVEnot really")  # undecodable: an error row
    return root


def _extract(corpus: Path, output: Path, *overrides: str) -> dict:
    argv = ["--input", str(corpus), "--output", str(output), "--log-level", "WARNING", "--set", "mel.n_mels=32"]
    for override in overrides:
        argv += ["--set", override]
    assert extract_features.main(argv) == 0
    return json.loads((output / "_manifest.json").read_text())


@pytest.mark.spark
def test_python_and_spark_writers_give_the_same_tables(spark, corpus: Path, tmp_path: Path) -> None:
    by_python = _extract(corpus, tmp_path / "python", "output.writer=python")
    by_spark = _extract(corpus, tmp_path / "spark", "output.writer=spark")
    assert (by_python["writer"], by_spark["writer"]) == ("python", "spark")
    assert by_python["counts"] == by_spark["counts"]
    assert by_python["counts"]["errors"] == 2 and by_python["counts"]["clips"] == 6
    for ours, theirs in zip(extraction_tables(tmp_path / "python"), extraction_tables(tmp_path / "spark")):
        assert_tables_equal(ours, theirs)
    for table, columns in (("features", FEATURE_COLUMNS), ("errors", list(ERROR_COLUMNS))):
        python_schema = spark.read.parquet(str(tmp_path / "python" / table)).select(*columns).schema
        spark_schema = spark.read.parquet(str(tmp_path / "spark" / table)).select(*columns).schema
        assert python_schema.simpleString() == spark_schema.simpleString(), table
    assert not list((tmp_path / "python").glob("features/*/.*")), "hidden half-written files were left behind"


@pytest.mark.spark
def test_partition_folders_are_spelled_like_sparks(spark, tmp_path: Path) -> None:
    values = ["ravdess", "crema-d", "a/b", "x:y=z", "50%", "é ü", "q?#*[1]^{2}", "tab\there", "", None]
    frame = spark.createDataFrame([(value, 1) for value in values], "corpus string, n int")
    frame.write.partitionBy("corpus").parquet(str(tmp_path / "table"))
    written = {path.name for path in (tmp_path / "table").iterdir() if path.is_dir()}
    assert {partition_folder("corpus", value) for value in values} == written


def test_files_no_receipt_names_are_removed(tmp_path: Path) -> None:
    kept = tmp_path / "features" / "corpus=x" / "part-00000-7-aaaa.snappy.parquet"
    for path in (
        kept,
        tmp_path / "features" / "corpus=x" / "part-00000-3-bbbb.snappy.parquet",  # a failed attempt
        tmp_path / "errors" / ".part-00001-4-cccc.snappy.parquet",  # a half-written file
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    removed = keep_received_files(str(tmp_path), ["features/corpus=x/part-00000-7-aaaa.snappy.parquet"])
    assert removed == ["errors/.part-00001-4-cccc.snappy.parquet", "features/corpus=x/part-00000-3-bbbb.snappy.parquet"]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [kept]
