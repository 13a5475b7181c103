"""Temperature scaling of a model's class probabilities, fitted on held-out speakers.

One scalar ``T > 0`` rescales log-probabilities: ``calibrated = softmax(log(p) / T)``. Working
on log-probabilities (not logits) makes it apply to every model kind alike, including the fused
model, whose output is a weighted geometric mean of two models' probabilities (its
log-probabilities are logits up to a per-row constant, which the softmax removes). Dividing
by ``T`` keeps each row's order, so the most probable class, and with it every accuracy
figure, is unchanged; ``T > 1`` softens overconfident probabilities, ``T < 1`` sharpens them.

:func:`fit_temperature` picks the ``T`` that minimises the negative log-likelihood of the
held-out clips' true classes (the NLL is convex in ``1 / T``; a bounded scalar search finds it).
:class:`HeldOut` carries a fit's probabilities on speakers the fit did not train on: the inner
validation speakers that early stopping uses (:meth:`training.data.TrainingData.fit_rows`), or
for logreg speakers held out the same way (:class:`training.kinds.LogregKind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Probabilities are clipped to at least this before the logarithm (a model may output exact 0).
MIN_PROBABILITY = 1e-12
#: Range searched for ``T``: wide enough for any model trained here, narrow enough to stay finite.
TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class HeldOut:
    """A fit's class probabilities on clips of speakers it did not train on.

    Attributes
    ----------
    probabilities
        float ``[m, k]``, rows summing to 1.
    targets
        int64 ``[m]`` class indices.
    fallback_probabilities
        float ``[m, k]``: the probabilities of the model's part that needs no speaker statistics
        (the CNN of a CNN fused with per-speaker standardised stats), which call scoring falls
        back to on a channel with too little speech; ``None`` for a model without such a part.
    """

    probabilities: np.ndarray
    targets: np.ndarray
    fallback_probabilities: np.ndarray | None = None


def pool_held_out(held_outs: Sequence[HeldOut]) -> HeldOut | None:
    """The clips of several :class:`HeldOut` sets in one, or ``None`` when there are none."""
    if not held_outs:
        return None
    fallbacks = [h.fallback_probabilities for h in held_outs]
    return HeldOut(
        np.concatenate([h.probabilities for h in held_outs]),
        np.concatenate([h.targets for h in held_outs]),
        None if any(f is None for f in fallbacks) else np.concatenate(fallbacks),
    )


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """float64 ``log(max(p, MIN_PROBABILITY))`` of probabilities ``[n, k]``."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), MIN_PROBABILITY))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / temperature)`` row by row.

    Parameters
    ----------
    probabilities
        ``[n, k]``, rows summing to 1.
    temperature
        ``T > 0``; 1 returns the probabilities renormalised.

    Returns
    -------
    np.ndarray
        float32 ``[n, k]``, rows summing to 1, each row's order (and argmax) unchanged.
    """
    scaled = log_probabilities(probabilities) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def temperature_nll(log_probs: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``targets`` ``[n]`` under ``softmax(log_probs / temperature)`` (``[n, k]``)."""
    scaled = log_probs / temperature
    shift = scaled.max(axis=1, keepdims=True)
    log_norm = shift[:, 0] + np.log(np.exp(scaled - shift).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(targets)), targets]))


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature minimising the NLL of held-out clips' true classes.

    Parameters
    ----------
    probabilities
        ``[n, k]`` model probabilities of held-out clips (``n >= 1``).
    targets
        int ``[n]`` true class indices.

    Returns
    -------
    float
        ``T`` in :data:`TEMPERATURE_BOUNDS`.
    """
    from scipy.optimize import minimize_scalar

    log_probs = log_probabilities(probabilities)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0 or log_probs.ndim != 2 or len(log_probs) != len(targets):
        raise ValueError(f"need probabilities [n, k] and targets [n] with n >= 1, got {log_probs.shape} and {targets.shape}")
    low, high = TEMPERATURE_BOUNDS
    # The NLL is convex in the inverse temperature, so a bounded Brent search finds its minimum.
    result = minimize_scalar(lambda inverse: temperature_nll(log_probs, targets, 1.0 / inverse),
                             bounds=(1.0 / high, 1.0 / low), method="bounded", options={"xatol": 1e-6})
    return float(1.0 / result.x)
