"""A CNN fused with a logistic regression on stats vectors (``cnn.stats_fusion_weight > 0``).

The CNN sees each clip's log-mel map normalised per utterance, which removes the clip's overall
level and spectral tilt; a logistic regression on the stats vector standardised per speaker
(:mod:`training.speaker_norm`) sees exactly how a clip's level, pitch-related and spectral
statistics differ from the speaker's other clips. The two err on different clips, and a
weighted geometric mean of their probabilities (a product of experts) beats both: on RAVDESS,
speaker-independent 6-fold, it adds about 5 points of UA to an ensemble of two CNNs
(``docs/RESULTS.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.metrics import loss_and_ua
from training.models.cnn import CnnModel
from training.models.cnn import predict_proba as cnn_predict_proba
from training.models.logreg import LogregModel

logger = logging.getLogger(__name__)


@dataclass
class FusedModel:
    """A CNN (one network or an ensemble) and a stats model whose probabilities are fused.

    Attributes
    ----------
    cnn
        The CNN model.
    stats_model
        The logistic regression on (per-speaker standardised) stats vectors.
    weight
        Weight of the stats model in ``(0, 1)``: see :func:`fuse_probabilities`.
    """

    cnn: CnnModel
    stats_model: LogregModel
    weight: float

    def predict_proba(self, features: np.ndarray, stats: np.ndarray, corpora: np.ndarray | None = None) -> np.ndarray:
        """Fused class probabilities ``[n, n_classes]``.

        Parameters
        ----------
        features
            CNN input ``[n, rows, frames]``.
        stats
            Stats vectors ``[n, d]``, already standardised as the stats model was trained
            (per speaker, for ``logreg.normalisation = "speaker"``).
        corpora
            ``[n]`` each row's corpus, for a stats model with weights of each corpus's own
            (:meth:`training.models.logreg.LogregModel.predict_proba`).
        """
        return self.fuse(cnn_predict_proba(self.cnn, features), stats, corpora)

    def fuse(self, cnn_probabilities: np.ndarray, stats: np.ndarray, corpora: np.ndarray | None = None) -> np.ndarray:
        """Fused class probabilities ``[n, n_classes]`` from the CNN's ``[n, n_classes]`` and the
        (standardised) stats vectors ``[n, d]``: for a caller that has the CNN's output already."""
        return fuse_probabilities(cnn_probabilities, self.stats_model.predict_proba(stats, corpora), self.weight)


def fuse_probabilities(cnn: np.ndarray, stats: np.ndarray, weight: float) -> np.ndarray:
    """Weighted geometric mean of two models' probabilities, renormalised.

    Parameters
    ----------
    cnn, stats
        ``[n, n_classes]`` probabilities of the two models.
    weight
        Weight of ``stats`` in ``[0, 1]``; ``cnn`` gets ``1 - weight``.

    Returns
    -------
    np.ndarray
        float32 ``[n, n_classes]``: ``softmax((1 - weight) log cnn + weight log stats)``.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"the fusion weight must lie in [0, 1], got {weight}")
    logits = (1 - weight) * np.log(np.clip(cnn, 1e-12, None)) + weight * np.log(np.clip(stats, 1e-12, None))
    logits -= logits.max(axis=1, keepdims=True)
    fused = np.exp(logits)
    return (fused / fused.sum(axis=1, keepdims=True)).astype(np.float32)


def choose_fusion_weight(cnn: np.ndarray, stats: np.ndarray, targets: np.ndarray, candidates: Sequence[float]) -> float:
    """The candidate weight whose fusion scores best on clips of speakers neither model trained on
    (in training, the speakers a fit holds out: the CNN early-stopped on them, which favours it a little).

    Parameters
    ----------
    cnn, stats
        ``[m, n_classes]`` probabilities of the two models on the held-out clips.
    targets
        ``[m]`` their class indices.
    candidates
        Weights of the stats model, each in ``(0, 1)``.

    Returns
    -------
    float
        The candidate with the highest UA (:func:`fuse_probabilities`); among equal UAs, the one
        with the lowest mean cross-entropy, then the smallest.
    """
    if not candidates:
        raise ValueError("choose_fusion_weight needs at least one candidate weight")
    scores = [loss_and_ua(fuse_probabilities(cnn, stats, weight), targets) for weight in candidates]
    best = min(range(len(candidates)), key=lambda k: (-scores[k][1], scores[k][0], candidates[k]))
    logger.info("fusion weight %g chosen on %d held-out clips (UA %s)", candidates[best], len(targets),
                ", ".join(f"{weight:g}: {ua:.3f}" for weight, (_, ua) in zip(candidates, scores)))
    return float(candidates[best])
