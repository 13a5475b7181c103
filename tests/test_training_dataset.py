"""Features rows → arrays with their shapes restored, and the table's feature config check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ser_udfs.errors import UserError
from ser_udfs.features.config import FeatureConfig, MelConfig
from training.data import feature_batch, label_indices, table_feature_config


def _frame(shapes: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "log_mel": [np.arange(r * c, dtype=np.float64) for r, c in shapes],
        "log_mel_shape": [list(shape) for shape in shapes],
        "stats": [np.full(3, i, dtype=np.float32) for i in range(len(shapes))],
        "label": ["sad", "happy"][: len(shapes)] * (len(shapes) // 2 or 1),
    })


def test_shapes_are_restored_row_major() -> None:
    batch = feature_batch(_frame([(2, 3), (2, 3)]), ["log_mel", "stats"])
    assert batch["log_mel"].shape == (2, 2, 3) and batch["log_mel"].dtype == np.float32
    np.testing.assert_array_equal(batch["log_mel"][1], np.arange(6).reshape(2, 3))
    assert batch["stats"].shape == (2, 3)


def test_bad_columns_are_refused_with_a_message() -> None:
    with pytest.raises(UserError, match="different 'log_mel' shapes"):
        feature_batch(_frame([(2, 3), (3, 2)]), ["log_mel"])
    with pytest.raises(UserError, match="no 'mfcc' column"):
        feature_batch(_frame([(2, 3)]), ["mfcc"])
    broken = _frame([(2, 3), (2, 3)])
    broken.at[1, "log_mel"] = np.zeros(5)
    with pytest.raises(UserError, match="do not hold 6 numbers"):
        feature_batch(broken, ["log_mel"])


def test_label_indices_follow_the_label_order() -> None:
    frame = pd.DataFrame({"label": ["sad", "happy", "sad"]})
    assert list(label_indices(frame, ["happy", "sad"])) == [1, 0, 1]
    with pytest.raises(UserError, match="not among"):
        label_indices(frame, ["happy"])


def test_table_feature_config_must_match_the_rows() -> None:
    config = FeatureConfig(mel=MelConfig(n_mels=40))
    frame = pd.DataFrame({"feature_config_version": [config.version()] * 2})
    assert table_feature_config(frame, config.to_dict()) == config
    with pytest.raises(UserError, match="mixes feature configs"):
        table_feature_config(frame.assign(feature_config_version=["a", "b"]), config.to_dict())
    with pytest.raises(UserError, match="manifest"):
        table_feature_config(frame, FeatureConfig().to_dict())


def test_augmented_copies_are_standardised_with_their_speakers_copies_made_alike() -> None:
    from training.data import standardisation_groups

    frame = pd.DataFrame({
        "corpus": ["ravdess"] * 5, "speaker": ["01", "01", "01", "01", "02"],
        "augmentation": [None, "noise_snr17+telephone", "gain+3.1db+noise_snr22+telephone", "gain-2.0db", np.nan],
    })
    assert standardisation_groups(frame).tolist() == [
        "ravdess/01", "ravdess/01|noise+telephone", "ravdess/01|gain+noise+telephone", "ravdess/01|gain", "ravdess/02",
    ]
    assert standardisation_groups(frame.drop(columns="augmentation")).tolist() == ["ravdess/01"] * 4 + ["ravdess/02"]
