"""Logistic regression: NumPy prediction equals scikit-learn's, binary and absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from ser_udfs.errors import UserError
from training.models.logreg import LogregConfig, LogregModel, fit_logreg


def _data(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(60) % n_classes
    stats = rng.normal(0, 1, (60, 5)) * [1, 10, 100, 1, 1] + np.eye(5)[labels] * 2
    return stats, labels


@pytest.mark.parametrize("n_classes", [2, 3])
def test_numpy_prediction_matches_scikit_learn(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    stats, labels = _data(n_classes)
    model = fit_logreg(stats, labels, n_classes=n_classes, config=LogregConfig(), seed=0)
    assert model.coef.shape == (n_classes, 5) and model.intercept.shape == (n_classes,)
    scaler = StandardScaler().fit(stats)
    reference = LogisticRegression(class_weight="balanced", max_iter=3000).fit(scaler.transform(stats), labels)
    np.testing.assert_allclose(model.predict_proba(stats), reference.predict_proba(scaler.transform(stats)), atol=1e-5)


def test_a_class_without_training_rows_is_never_predicted() -> None:
    stats, labels = _data(3)
    model = fit_logreg(stats, labels, n_classes=4, config=LogregConfig(), seed=0)
    assert model.predict_proba(stats)[:, 3].max() < 1e-6


def test_tensors_round_trip_and_shape_checks() -> None:
    stats, labels = _data(3)
    model = fit_logreg(stats, labels, n_classes=3, config=LogregConfig(), seed=0)
    again = LogregModel.from_tensors(model.tensors(), n_classes=3)
    np.testing.assert_array_equal(again.predict_proba(stats), model.predict_proba(stats))
    with pytest.raises(UserError, match="expected \\[4, 5\\]"):
        LogregModel.from_tensors(model.tensors(), n_classes=4)
    with pytest.raises(UserError, match="stats vectors of length 5"):
        model.predict_proba(stats[:, :4])
    with pytest.raises(UserError, match="only 1 class"):
        fit_logreg(stats, np.zeros(60, dtype=int), n_classes=3, config=LogregConfig(), seed=0)


def test_an_unknown_stats_normalisation_is_refused() -> None:
    with pytest.raises(ValueError, match="logreg.normalisation"):
        LogregConfig(normalisation="corpus")
