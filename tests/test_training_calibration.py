"""Temperature scaling: fitting recovers a known temperature, and applying it keeps the argmax."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import apply_temperature, fit_temperature


def _softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fitting_recovers_a_known_temperature(true_temperature: float) -> None:
    # A model outputs softmax(z); the true classes are drawn from softmax(z / T): the fitted T is T.
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (20_000, 5))
    truth = _softmax(logits / true_temperature)
    targets = (rng.random(len(truth))[:, None] > truth.cumsum(axis=1)).sum(axis=1)
    fitted = fit_temperature(_softmax(logits), targets)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_applying_a_temperature_keeps_the_order_and_sums_to_one() -> None:
    probabilities = _softmax(np.random.default_rng(1).normal(0.0, 3.0, (50, 4)))
    probabilities[0] = [1.0, 0.0, 0.0, 0.0]  # exact zeros are clipped, not -inf
    for temperature in (0.3, 1.0, 4.0):
        calibrated = apply_temperature(probabilities, temperature)
        assert np.isfinite(calibrated).all()
        np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(calibrated.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-6)
    softened = apply_temperature(probabilities, 4.0)
    assert (softened.max(axis=1) <= probabilities.max(axis=1) + 1e-6).all()
