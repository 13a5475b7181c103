"""Pieces every torch training loop here shares: per-epoch history, early stopping, class weights.

The CNN (:mod:`training.models.cnn`), the fine-tuned encoder (:mod:`training.models.wav2vec2`)
and the embedding head (:mod:`training.models.embedding_head`) record a :class:`TrainingHistory`
per run, weight their loss with :func:`balanced_class_weights` (the CNN, row by row, with
:func:`balanced_row_weights`, which also balances corpora) and pick the epoch to keep with an
:class:`EarlyStopping` on held-out speakers. Torch is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class TrainingHistory:
    """Per-epoch figures of one training run (lists indexed by epoch - 1)."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_ua: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "train_loss": self.train_loss,
            "validation_loss": self.validation_loss,
            "validation_ua": self.validation_ua,
            "learning_rate": self.learning_rate,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingHistory":
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: data[key] for key in cls().to_dict()})


@dataclass
class EarlyStopping:
    """Which epoch's weights to keep, from each epoch's validation loss and UA.

    Attributes
    ----------
    history
        The run's history: :meth:`record` appends to its validation lists and sets ``best_epoch``.
    patience
        Epochs after the kept one before :meth:`should_stop` says stop.
    tolerance
        ``None``: keep the epoch with the best ``(UA, -loss)``; a number: keep the *latest*
        epoch whose UA is within ``tolerance`` of the best UA so far.
    best_state
        A CPU copy of the kept epoch's state dict (``None`` until an epoch is kept).
    """

    history: TrainingHistory
    patience: int
    tolerance: float | None = None
    best_state: dict[str, "torch.Tensor"] | None = None
    _best_key: tuple[float, float] = (-1.0, 0.0)

    def record(self, epoch: int, loss: float, ua: float, state: Callable[[], Mapping[str, "torch.Tensor"]]) -> None:
        """Add epoch ``epoch``'s validation figures; keep a copy of ``state()`` if that epoch is kept."""
        self.history.validation_loss.append(loss)
        self.history.validation_ua.append(ua)
        if self.tolerance is None:
            keep = (ua, -loss) > self._best_key
            if keep:
                self._best_key = (ua, -loss)
        else:
            keep = ua >= self.best_ua - self.tolerance
        if keep:
            self.history.best_epoch = epoch
            self.best_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in state().items()}

    @property
    def best_ua(self) -> float:
        """The best validation UA so far."""
        return max(self.history.validation_ua)

    def should_stop(self, epoch: int) -> bool:
        """Whether ``patience`` epochs have passed since the kept one."""
        return epoch - self.history.best_epoch >= self.patience


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> "torch.Tensor":
    """``[n_classes]`` weights ``n / (n_classes * count)`` (0 for absent classes), as scikit-learn's "balanced"."""
    import torch

    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.from_numpy(weights.astype(np.float32))


def balanced_row_weights(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[n]`` weights ``n / (cells * count of the row's cell)`` over the (group, label) cells that
    have rows: every cell weighs the same in total. With one group this is scikit-learn's
    ``class_weight="balanced"``."""
    cells = np.array([f"{group}\x00{label}" for group, label in zip(np.asarray(groups).astype(str), labels)])
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return len(cells) / (len(counts) * counts[inverse].astype(np.float64))


def release_accelerator_memory() -> None:
    """Return cached GPU memory after a fold's model is dropped (no-op without a GPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
