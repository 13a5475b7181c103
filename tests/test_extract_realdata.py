"""Extraction of the shared RAVDESS copy: every clip lands with the right labels (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from jobs import extract_features

pytestmark = [pytest.mark.spark, pytest.mark.realdata]

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear", "07": "disgust", "08": "surprise"}


def test_all_ravdess_clips_land_with_labels_speakers_and_gender(spark, ravdess_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "ravdess"
    assert extract_features.main(["--input", str(ravdess_dir), "--output", str(output), "--log-level", "WARNING"]) == 0
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["counts"]["files_listed"] == 1434
    assert manifest["counts"]["clips"] == 1434 and manifest["counts"]["errors"] == 0
    table = pd.read_parquet(output / "features", columns=["path", "corpus", "speaker", "gender", "label", "raw_label"])
    assert len(table) == 1434 and table["path"].is_unique
    names = table["path"].map(lambda p: Path(unquote(p)).stem.split("-"))
    assert (table["corpus"] == "ravdess").all()
    assert (table["raw_label"] == names.str[2]).all()
    assert (table["label"] == names.str[2].map(EMOTIONS)).all()
    assert (table["speaker"] == names.str[6]).all()
    assert table["speaker"].nunique() == 24
    expected_gender = names.str[6].astype(int).map(lambda actor: "male" if actor % 2 else "female")
    assert (table["gender"] == expected_gender).all()
