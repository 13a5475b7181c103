"""Class-balanced logistic regression on the standardised ``stats`` vector.

scikit-learn fits it; prediction is plain NumPy on the stored arrays (scaler mean and scale,
coefficients, intercepts), so a bundle needs neither pickle nor scikit-learn to predict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ser_udfs.errors import UserError
from training.speaker_norm import STATS_NORMALISATIONS, StatsNormalisation
from training.stats_inputs import check_stats_inputs

logger = logging.getLogger(__name__)

# Logit offset given to a class the training side never saw, so it is (almost) never predicted.
ABSENT_CLASS_LOGIT_OFFSET = 30.0


@dataclass(frozen=True)
class LogregConfig:
    """Settings of the logistic regression (``[logreg]`` in ``conf/train_logreg.toml``).

    ``regularisation_c`` is scikit-learn's ``C`` (inverse L2 strength). ``normalisation``:
    ``"global"`` standardises the stats with the training set's mean and std only; ``"speaker"``
    first standardises each speaker's vectors with that speaker's own (:mod:`training.speaker_norm`),
    in training and wherever the model is applied (which then needs each row's speaker).
    ``calibration_fraction`` (``--model logreg`` only): share of each fit's speakers held out of
    a second fit whose probabilities on them fit the bundle's temperature
    (:mod:`training.calibration`); the model itself is fitted on all the rows. ``inputs``: the
    feature columns side by side in its vector (:mod:`training.stats_inputs`: ``stats``,
    ``egemaps``).
    """

    inputs: tuple[str, ...] = ("stats",)
    regularisation_c: float = 1.0
    max_iter: int = 3000
    class_balanced: bool = True
    normalisation: StatsNormalisation = "global"
    calibration_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.regularisation_c <= 0 or self.max_iter < 1:
            raise ValueError("logreg.regularisation_c must be positive and logreg.max_iter at least 1")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError("logreg.calibration_fraction must lie in (0, 1)")
        check_stats_inputs(self.inputs, setting="logreg.inputs")
        if self.normalisation not in STATS_NORMALISATIONS:
            raise ValueError(f"logreg.normalisation must be one of {list(STATS_NORMALISATIONS)}, got {self.normalisation!r}")


@dataclass(frozen=True)
class LogregModel:
    """A fitted multinomial logistic regression with its standardisation.

    Attributes
    ----------
    mean, scale
        Standardisation ``[d]``: ``z = (stats - mean) / scale``.
    coef
        ``[n_classes, d]``.
    intercept
        ``[n_classes]``.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return int(self.coef.shape[0])

    @property
    def n_stats(self) -> int:
        """Length ``d`` of the stats vector the model takes."""
        return int(self.coef.shape[1])

    def predict_proba(self, stats: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` for stats vectors ``[n, d]``."""
        stats = np.asarray(stats, dtype=np.float64)
        if stats.ndim != 2 or stats.shape[1] != self.n_stats:
            raise UserError(
                f"the model takes stats vectors of length {self.n_stats}, got an array of shape {stats.shape}"
            )
        logits = ((stats - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        """Named arrays for a safetensors file."""
        return {"scaler_mean": self.mean, "scaler_scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], *, n_classes: int) -> "LogregModel":
        """Rebuild from :meth:`tensors`, refusing missing tensors or inconsistent shapes."""
        missing = sorted({"scaler_mean", "scaler_scale", "coef", "intercept"} - set(tensors))
        if missing:
            raise UserError(f"the model weights lack tensor(s) {missing}")
        coef = np.asarray(tensors["coef"], dtype=np.float64)
        n_stats = coef.shape[1] if coef.ndim == 2 else -1
        expected = {
            "coef": (n_classes, n_stats),
            "intercept": (n_classes,),
            "scaler_mean": (n_stats,),
            "scaler_scale": (n_stats,),
        }
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape or n_stats < 1:
                raise UserError(
                    f"tensor {name!r} has shape {list(tensors[name].shape)}, expected {list(shape)} "
                    f"for {n_classes} classes"
                )
        return cls(
            mean=np.asarray(tensors["scaler_mean"], dtype=np.float64),
            scale=np.asarray(tensors["scaler_scale"], dtype=np.float64),
            coef=coef,
            intercept=np.asarray(tensors["intercept"], dtype=np.float64),
        )


def fit_logreg(
    stats: np.ndarray, labels: np.ndarray, *, n_classes: int, config: LogregConfig, seed: int,
    corpora: np.ndarray | None = None,
) -> LogregModel:
    """Standardise ``stats`` ``[n, d]`` and fit a (class-balanced) multinomial logistic regression.

    Parameters
    ----------
    stats
        Training vectors ``[n, d]``.
    labels
        Class indices ``[n]`` in ``0 .. n_classes - 1``; classes without rows get a very low
        logit so that they are (almost) never predicted.
    corpora
        The corpus of each row ``[n]``. With ``config.class_balanced`` and rows of more than one
        corpus, each (corpus, class) cell weighs the same in the fit (:func:`balanced_row_weights`),
        so a large corpus does not drown a small one; otherwise classes are balanced.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    stats = np.asarray(stats, dtype=np.float64)
    if not np.isfinite(stats).all():
        raise UserError("the stats vectors hold NaN or infinite values; re-extract the features")
    present = np.unique(labels)
    if len(present) < 2:
        raise UserError(f"the training side holds only {len(present)} class(es); at least 2 are needed")
    scaler = StandardScaler().fit(stats)
    by_corpus = config.class_balanced and corpora is not None and len(set(corpora)) > 1
    classifier = LogisticRegression(
        C=config.regularisation_c,
        max_iter=config.max_iter,
        class_weight="balanced" if config.class_balanced and not by_corpus else None,
        random_state=seed,
    ).fit(scaler.transform(stats), labels, sample_weight=balanced_row_weights(labels, corpora) if by_corpus else None)
    fitted_coef, fitted_intercept = classifier.coef_, classifier.intercept_
    if len(present) == 2:
        # scikit-learn gives one row for two classes; softmax over (-z/2, z/2) equals sigmoid(z).
        fitted_coef = np.vstack([-fitted_coef / 2, fitted_coef / 2])
        fitted_intercept = np.array([-fitted_intercept[0] / 2, fitted_intercept[0] / 2])
    coef = np.zeros((n_classes, stats.shape[1]))
    intercept = np.full(n_classes, fitted_intercept.min() - ABSENT_CLASS_LOGIT_OFFSET)
    coef[classifier.classes_] = fitted_coef
    intercept[classifier.classes_] = fitted_intercept
    logger.info("logistic regression: %d rows, %d stats, %d classes, %d iterations",
                len(labels), stats.shape[1], len(present), int(np.max(classifier.n_iter_)))
    return LogregModel(mean=scaler.mean_, scale=scaler.scale_, coef=coef, intercept=intercept)


def balanced_row_weights(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[n]`` weights ``n / (cells * count of the row's cell)`` over the (group, label) cells that
    have rows: every cell weighs the same in total. With one group this is scikit-learn's
    ``class_weight="balanced"``."""
    cells = np.array([f"{group}\x00{label}" for group, label in zip(np.asarray(groups).astype(str), labels)])
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return len(cells) / (len(counts) * counts[inverse].astype(np.float64))
