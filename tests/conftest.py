"""Shared fixtures: one local-mode Spark session for the whole run, real-data locations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RAVDESS_DIR = SHARED_DATA / "ravdess-speech-16k"
BANGLASER_DIR = SHARED_DATA / "banglaser-16k"


@pytest.fixture(scope="session")
def spark() -> Iterator["pyspark.sql.SparkSession"]:  # noqa: F821 - imported lazily
    """A local[2] session shared by every Spark test (start-up costs seconds)."""
    os.environ.setdefault("SER_SPARK_MASTER", "local[2]")
    from jobs._spark import build_spark

    session = build_spark("ser-spark-tests", {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """The shared RAVDESS copy; tests that need it are skipped when it is absent."""
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"real data not present at {RAVDESS_DIR}")
    return RAVDESS_DIR
