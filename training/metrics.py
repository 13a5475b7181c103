"""Classification metrics computed from the confusion matrix, and fold summaries.

Definitions (``C[i, j]`` = rows of true class ``i`` predicted as ``j``):

- ``accuracy`` (WA, weighted accuracy): ``trace(C) / sum(C)``.
- ``ua`` (unweighted / balanced accuracy): mean recall over the classes that occur in the
  true labels.
- per class: ``precision = C[i, i] / column i`` (0 when nothing was predicted as ``i``),
  ``recall = C[i, i] / row i``, ``f1 = 2 p r / (p + r)`` (0 when ``p + r = 0``).
- ``macro_f1``: mean F1 over the classes that occur in the true or the predicted labels
  (scikit-learn's default).

:func:`loss_and_ua` gives the figures early stopping watches (mean cross-entropy and UA of a
model's probabilities on held-out speakers).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

HEADLINE_METRICS = ("accuracy", "ua", "macro_f1")


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
