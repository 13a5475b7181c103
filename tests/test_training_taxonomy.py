"""Taxonomies: the named ones, a user's own file, and mapping a frame onto them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ser_udfs.errors import UserError
from training.taxonomy import apply_taxonomy, load_taxonomy


def test_core6_maps_calm_to_neutral_and_drops_surprise_and_missing_labels() -> None:
    core6 = load_taxonomy("core6")
    assert core6.labels == ("angry", "disgust", "fear", "happy", "neutral", "sad")
    frame = pd.DataFrame({"label": ["calm", "neutral", "surprise", None, "sad", "boredom"], "x": range(6)})
    mapped, report = apply_taxonomy(frame, core6)
    assert list(mapped["label"]) == ["neutral", "neutral", "sad"]
    assert list(mapped["source_label"]) == ["calm", "neutral", "sad"]
    assert list(mapped["x"]) == [0, 1, 4]
    assert report.kept == {"angry": 0, "disgust": 0, "fear": 0, "happy": 0, "neutral": 2, "sad": 1}
    assert report.dropped == {"<none>": 1, "boredom": 1, "surprise": 1}
    assert report.missing_labels == ["angry", "disgust", "fear", "happy"]


def test_named_taxonomies() -> None:
    assert load_taxonomy("ravdess8").labels == ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    assert load_taxonomy("basic4").target("calm") is None
    with pytest.raises(UserError, match="unknown taxonomy 'core7'"):
        load_taxonomy("core7")


def test_users_own_taxonomy_file(tmp_path: Path) -> None:
    single = tmp_path / "valence.toml"
    single.write_text('labels = ["negative", "positive"]\nmap = { angry = "negative", happy = "positive" }\n')
    valence = load_taxonomy(str(single))
    assert (valence.name, valence.target("angry"), valence.target("sad")) == ("valence", "negative", None)

    several = tmp_path / "mine.toml"
    several.write_text('[a]\nlabels = ["sad", "happy"]\n[b]\nlabels = ["angry", "calm"]\nmap = { neutral = "calm" }\n')
    assert load_taxonomy(f"{several}:b").target("neutral") == "calm"
    with pytest.raises(UserError, match="pick one"):
        load_taxonomy(str(several))
    with pytest.raises(UserError, match="no table 'c'"):
        load_taxonomy(f"{several}:c")


def test_bad_taxonomies_are_refused(tmp_path: Path) -> None:
    bad_target = tmp_path / "bad.toml"
    bad_target.write_text('labels = ["sad"]\nmap = { calm = "neutral" }\n')
    with pytest.raises(UserError, match="not one of its labels"):
        load_taxonomy(str(bad_target))
    unknown_key = tmp_path / "typo.toml"
    unknown_key.write_text('labels = ["sad", "happy"]\nmapping = { calm = "sad" }\n')
    with pytest.raises(UserError, match="unknown key"):
        load_taxonomy(str(unknown_key))
    with pytest.raises(UserError, match="does not exist"):
        load_taxonomy(str(tmp_path / "absent.toml"))
