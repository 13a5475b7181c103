"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    brier_score,
    calibration_figures,
    classification_metrics,
    expected_calibration_error,
    grouped_metrics,
    reliability_bins,
    summarise_folds,
)

LABELS = ["a", "b", "c"]


def test_metrics_match_hand_computed_values() -> None:
    # true a a a a b b c ; predicted a a b c b a a
    y_true = np.array([0, 0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 2, 1, 0, 0])
    metrics = classification_metrics(y_true, y_pred, LABELS)
    assert metrics["confusion_matrix"] == {"labels": LABELS, "matrix": [[2, 1, 1], [1, 1, 0], [1, 0, 0]]}
    assert metrics["n"] == 7
    assert metrics["accuracy"] == pytest.approx(3 / 7)
    # recalls 2/4, 1/2, 0/1
    assert metrics["ua"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # precisions 2/4, 1/2, 0/1; F1 a = 0.5, b = 0.5, c = 0
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4}
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["macro_f1"] == pytest.approx(1 / 3)


def test_classes_absent_from_truth_do_not_count_in_ua() -> None:
    metrics = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), LABELS)
    assert metrics["ua"] == pytest.approx((0.5 + 1.0) / 2)
    # c was predicted once, never true: F1 0 and counted in macro-F1 (scikit-learn's default)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_grouped_metrics_and_fold_summary() -> None:
    y_true, y_pred = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1])
    groups = grouped_metrics(y_true, y_pred, np.array(["x", "x", "y", "y"]), ["a", "b"])
    assert groups["x"]["accuracy"] == 1.0 and groups["y"]["accuracy"] == 0.5
    summary = summarise_folds([groups["x"], groups["y"]])
    assert summary["folds"] == 2
    assert summary["accuracy"]["mean"] == pytest.approx(0.75)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summary["per_class"]["a"]["recall"]["values"] == [1.0, 0.0]


def test_ece_and_brier_match_hand_computed_values() -> None:
    probabilities = np.array([
        [0.9, 0.05, 0.05],  # confidence 0.9, bin 13 ((13/15, 14/15]), correct
        [0.1, 0.85, 0.05],  # 0.85 → bin 12 ((12/15, 13/15]), wrong (true 0)
        [0.5, 0.3, 0.2],  # 0.5 → bin 7 ((7/15, 8/15]), correct
        [0.2, 0.2, 0.6],  # 0.6 → bin 8 ((8/15, 9/15]), correct
    ])
    targets = np.array([0, 0, 0, 2])
    # every clip alone in its bin: ECE = mean |correct - confidence|
    expected_ece = (abs(1 - 0.9) + abs(0 - 0.85) + abs(1 - 0.5) + abs(1 - 0.6)) / 4
    assert expected_calibration_error(probabilities, targets) == pytest.approx(expected_ece)
    expected_brier = (
        (0.1**2 + 0.05**2 + 0.05**2) + (0.9**2 + 0.85**2 + 0.05**2) + (0.5**2 + 0.3**2 + 0.2**2) + (0.2**2 + 0.2**2 + 0.4**2)
    ) / 4
    assert brier_score(probabilities, targets) == pytest.approx(expected_brier)
    bins = reliability_bins(probabilities, targets)
    assert len(bins["count"]) == 15 and bins["edges"][0] == 0.0 and bins["edges"][-1] == 1.0
    assert [i for i, count in enumerate(bins["count"]) if count] == [7, 8, 12, 13]
    assert bins["accuracy"][12] == 0.0 and bins["confidence"][13] == pytest.approx(0.9) and bins["accuracy"][0] is None
    # two clips sharing a bin: |mean accuracy - mean confidence| weighted by the bin's share
    shared = np.array([[0.9, 0.1], [0.1, 0.9]])  # both confidence 0.9, one right, one wrong
    assert expected_calibration_error(shared, np.array([0, 0])) == pytest.approx(abs(0.5 - 0.9))
    assert set(calibration_figures(shared, np.array([0, 0]), with_bins=True)) == {"ece", "brier", "bins"}
