"""PNG plots for bundles and evaluation reports (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from training.fitting import TrainingHistory


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str) -> Path:
    """Row-normalised confusion matrix with counts, ``matrix`` ``[k, k]`` (rows true, columns predicted)."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    size = 1.5 + 0.7 * len(labels)
    figure, axes = plt.subplots(figsize=(max(size + 1.5, 7.5), size + 0.5))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            axes.text(j, i, f"{matrix[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=7,
                      color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


#: Font size of legends: readable at the PNG's 110 dpi.
LEGEND_FONT_SIZE = 8


def plot_training_curves(histories: Sequence[tuple[str, TrainingHistory]], path: str | Path, *, title: str) -> Path:
    """Training/validation loss and validation UA per epoch, one line per run (fold), under ``title``
    (model, taxonomy, split); the legend in its own row under the panels."""
    plt = _pyplot()
    figure = training_curves_figure(histories, title=title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def training_curves_figure(histories: Sequence[tuple[str, TrainingHistory]], *, title: str) -> Any:
    """The matplotlib figure of :func:`plot_training_curves` (close it with ``pyplot.close``)."""
    plt = _pyplot()
    figure, (loss_axes, ua_axes) = plt.subplots(1, 2, figsize=(11, 4.6 + 0.25 * -(-len(histories) // 3)),
                                                layout="constrained")
    for index, (name, history) in enumerate(histories):
        colour = f"C{index % 10}"
        epochs = np.arange(1, len(history.train_loss) + 1)
        loss_axes.plot(epochs, history.train_loss, color=colour, label=f"{name}: train (solid)")
        if history.validation_loss:
            loss_axes.plot(epochs, history.validation_loss, color=colour, linestyle="--",
                           label=f"{name}: validation (dashed)")
            ua_axes.plot(epochs, history.validation_ua, color=colour)
            ua_axes.axvline(history.best_epoch, color=colour, linestyle=":", linewidth=0.8)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.set_title("loss (dashed: validation speakers)", fontsize=9)
    ua_axes.set_xlabel("epoch")
    ua_axes.set_ylabel("UA")
    ua_axes.set_title("validation UA, colours as in the loss (dotted: best epoch)", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside lower center", ncol=3,
                  fontsize=LEGEND_FONT_SIZE, frameon=False)
    return figure


def plot_reliability_diagram(before: Mapping[str, Any], after: Mapping[str, Any], path: str | Path, *, title: str) -> Path:
    """Accuracy against top-class confidence per bin, before and after calibration.

    Parameters
    ----------
    before, after
        :func:`training.metrics.calibration_figures` with ``bins``: ``{"ece", "brier", "bins":
        {"edges": [B + 1], "count": [B], "confidence": [B], "accuracy": [B]}}``.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for panel, (stage, figures) in zip(axes, (("before", before), ("after", after))):
        bins = figures["bins"]
        edges = np.asarray(bins["edges"], dtype=np.float64)
        width = edges[1:] - edges[:-1]
        accuracy = np.array([np.nan if value is None else value for value in bins["accuracy"]], dtype=np.float64)
        confidence = np.array([np.nan if value is None else value for value in bins["confidence"]], dtype=np.float64)
        filled = np.asarray(bins["count"]) > 0
        panel.bar(edges[:-1][filled], accuracy[filled], width=width[filled], align="edge", color="C0",
                  edgecolor="black", linewidth=0.5, label="accuracy")
        panel.bar(edges[:-1][filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled],
                  width=width[filled], align="edge", color="C3", alpha=0.35, label="gap to confidence")
        panel.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
        panel.set_xlim(0, 1)
        panel.set_ylim(0, 1)
        panel.set_xlabel("top-class confidence")
        panel.set_title(f"{stage} calibration: ECE {figures['ece']:.3f}, Brier {figures['brier']:.3f}", fontsize=9)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
