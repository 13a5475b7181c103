"""Classification metrics computed from the confusion matrix, and fold summaries.

Definitions (``C[i, j]`` = rows of true class ``i`` predicted as ``j``):

- ``accuracy`` (WA, weighted accuracy): ``trace(C) / sum(C)``.
- ``ua`` (unweighted / balanced accuracy): mean recall over the classes that occur in the
  true labels.
- per class: ``precision = C[i, i] / column i`` (0 when nothing was predicted as ``i``),
  ``recall = C[i, i] / row i``, ``f1 = 2 p r / (p + r)`` (0 when ``p + r = 0``).
- ``macro_f1``: mean F1 over the classes that occur in the true or the predicted labels
  (scikit-learn's default).

Calibration (:func:`calibration_figures`, from class probabilities ``p`` ``[n, k]``):

- ``ece`` (expected calibration error): clips binned by top-class confidence ``max_k p`` into
  :data:`CALIBRATION_BINS` equal-width bins of ``[0, 1]`` (bin ``b`` holds ``b/B < c <= (b+1)/B``,
  the first also ``c = 0``); ``sum_b (n_b / n) |accuracy_b - mean confidence_b|``.
- ``brier``: mean over clips of ``sum_k (p_k - y_k)^2`` with ``y`` the one-hot true class
  (0 is perfect, 2 is the worst).

:func:`loss_and_ua` gives the figures early stopping watches (mean cross-entropy and UA of a
model's probabilities on held-out speakers).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

HEADLINE_METRICS = ("accuracy", "ua", "macro_f1")
#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
CALIBRATION_BINS = 15


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[n_classes, n_classes]``: rows are true classes, columns predicted ones."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """WA, UA, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred
        Class indices ``[n]`` into ``labels``.
    labels
        Class names in index order.

    Returns
    -------
    dict
        ``{"n", "accuracy", "ua", "macro_f1", "per_class": {label: {...}},
        "confusion_matrix": {"labels", "matrix"}}``; JSON-serialisable.
    """
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    correct = np.diag(matrix).astype(np.float64)
    recall = _recall(matrix)
    precision = np.divide(correct, predicted_counts, out=np.zeros_like(correct), where=predicted_counts > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(correct), where=denominator > 0)
    present = true_counts > 0
    seen = present | (predicted_counts > 0)
    total = int(matrix.sum())
    return {
        "n": total,
        "accuracy": float(correct.sum() / total) if total else float("nan"),
        "ua": _unweighted_accuracy(matrix),
        "macro_f1": float(f1[seen].mean()) if seen.any() else float("nan"),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(true_counts[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def _recall(matrix: np.ndarray) -> np.ndarray:
    """Recall ``[k]`` per true class of a confusion matrix ``[k, k]`` (0 for absent classes)."""
    true_counts = matrix.sum(axis=1)
    correct = np.diag(matrix).astype(np.float64)
    return np.divide(correct, true_counts, out=np.zeros_like(correct), where=true_counts > 0)


def _unweighted_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the true classes present in a confusion matrix ``[k, k]`` (NaN if none)."""
    present = matrix.sum(axis=1) > 0
    return float(_recall(matrix)[present].mean()) if present.any() else float("nan")


def loss_and_ua(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and UA of class probabilities ``[m, k]`` for class indices ``[m]``."""
    labels = np.asarray(labels, dtype=np.int64)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), probabilities.shape[1])
    return loss, _unweighted_accuracy(matrix)


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, *, n_bins: int = CALIBRATION_BINS) -> dict[str, list]:
    """Clips per top-class confidence bin, with their mean confidence and accuracy.

    Parameters
    ----------
    probabilities
        ``[n, k]`` class probabilities.
    targets
        ``[n]`` true class indices.

    Returns
    -------
    dict
        ``{"edges": [n_bins + 1], "count": [n_bins], "confidence": [n_bins], "accuracy": [n_bins]}``
        (mean confidence and accuracy are ``None`` for an empty bin); JSON-serialisable.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(targets, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    return {
        "edges": [float(edge) for edge in edges],
        "count": [int(c) for c in count],
        "confidence": [float(s / c) if c else None for s, c in zip(confidence_sum, count)],
        "accuracy": [float(s / c) if c else None for s, c in zip(correct_sum, count)],
    }


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, *, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE of probabilities ``[n, k]`` for class indices ``[n]`` (see the module docstring); NaN for ``n = 0``."""
    bins = reliability_bins(probabilities, targets, n_bins=n_bins)
    total = sum(bins["count"])
    if total == 0:
        return float("nan")
    return float(sum(count * abs(accuracy - confidence) for count, accuracy, confidence
                     in zip(bins["count"], bins["accuracy"], bins["confidence"]) if count) / total)


def brier_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean of ``sum_k (p_k - y_k)^2`` over clips, probabilities ``[n, k]``, class indices ``[n]``; NaN for ``n = 0``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return float("nan")
    one_hot = np.eye(probabilities.shape[1])[np.asarray(targets, dtype=np.int64)]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def calibration_figures(probabilities: np.ndarray, targets: np.ndarray, *, with_bins: bool = False) -> dict[str, Any]:
    """``{"ece", "brier"}`` of probabilities ``[n, k]`` for class indices ``[n]``, and
    ``"bins"`` (:func:`reliability_bins`) when ``with_bins``."""
    figures: dict[str, Any] = {
        "ece": expected_calibration_error(probabilities, targets),
        "brier": brier_score(probabilities, targets),
    }
    if with_bins:
        figures["bins"] = reliability_bins(probabilities, targets)
    return figures


def summarise_calibration(fold_calibrations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of the temperature and of ECE and Brier before and after.

    ``fold_calibrations``: per fold ``{"temperature", "before": {"ece", "brier"}, "after": {...}}``.

    Returns
    -------
    dict
        ``{"temperature": {"mean", "std", "values"}, "before": {"ece": {...}, "brier": {...}}, "after": {...}}``.
    """
    return {
        "temperature": _mean_std([fold["temperature"] for fold in fold_calibrations]),
        **{
            stage: {name: _mean_std([fold[stage][name] for fold in fold_calibrations]) for name in ("ece", "brier")}
            for stage in ("before", "after")
        },
    }


def grouped_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` per value of ``groups`` ``[n]`` (e.g. per corpus)."""
    groups = np.asarray(groups).astype(str)
    return {
        str(group): classification_metrics(y_true[groups == group], y_pred[groups == group], labels)
        for group in sorted(set(groups))
    }


def summarise_folds(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of the headline metrics and per-class recall/F1.

    The standard deviation is the sample one (``ddof=1``), 0 for a single fold.

    Returns
    -------
    dict
        ``{"folds": k, "accuracy": {"mean", "std", "values"}, "ua": ..., "macro_f1": ...,
        "per_class": {label: {"recall": {...}, "f1": {...}}}}``.
    """
    summary: dict[str, Any] = {"folds": len(fold_metrics)}
    for name in HEADLINE_METRICS:
        summary[name] = _mean_std([fold[name] for fold in fold_metrics])
    labels = list(fold_metrics[0]["per_class"]) if fold_metrics else []
    summary["per_class"] = {
        label: {
            measure: _mean_std([fold["per_class"][label][measure] for fold in fold_metrics])
            for measure in ("recall", "f1")
        }
        for label in labels
    }
    return summary


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "values": [float(v) for v in array],
    }


def format_headline(metrics: dict[str, Any]) -> str:
    """``WA 0.612 UA 0.598 macro-F1 0.590`` for a metrics dict or ``± std`` for a fold summary."""
    parts = []
    for name, title in zip(HEADLINE_METRICS, ("WA", "UA", "macro-F1")):
        value = metrics[name]
        parts.append(
            f"{title} {value['mean']:.3f} ± {value['std']:.3f}" if isinstance(value, dict) else f"{title} {value:.3f}"
        )
    return " ".join(parts)
