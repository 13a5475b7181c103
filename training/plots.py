"""PNG plots for bundles and evaluation reports (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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


def plot_training_curves(histories: Sequence[tuple[str, TrainingHistory]], path: str | Path) -> Path:
    """Training/validation loss and validation UA per epoch, one line per run (fold)."""
    plt = _pyplot()
    figure, (loss_axes, ua_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, history) in enumerate(histories):
        colour = f"C{index % 10}"
        epochs = np.arange(1, len(history.train_loss) + 1)
        loss_axes.plot(epochs, history.train_loss, color=colour, label=f"{name} train")
        if history.validation_loss:
            loss_axes.plot(epochs, history.validation_loss, color=colour, linestyle="--", label=f"{name} validation")
            ua_axes.plot(epochs, history.validation_ua, color=colour, label=name)
            ua_axes.axvline(history.best_epoch, color=colour, linestyle=":", linewidth=0.8)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.set_title("loss (dashed: validation speakers)", fontsize=9)
    ua_axes.set_xlabel("epoch")
    ua_axes.set_ylabel("UA")
    ua_axes.set_title("validation UA (dotted: best epoch)", fontsize=9)
    loss_axes.legend(fontsize=6, ncol=2)
    if ua_axes.lines:
        ua_axes.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
