"""A compact CNN on log-mel (optionally + MFCC) maps, and its training loop.

The network: input normalisation (per utterance and frequency row, or with training-set row
statistics) → one conv block per entry of ``channels`` (3×3 conv, batch norm, GELU, 2×2 max
pooling) → mean over frequency → attentive statistics pooling over time (or mean + max) →
dropout → linear. With ``ensemble = N`` (N > 1), :class:`CnnEnsemble` holds N such networks
trained alike from different seeds and averages their class probabilities: a few hundred training
clips leave one network's test UA swinging by several points with the seed alone, and averaging
members steadies and lifts it (measured in ``docs/RESULTS.md``), at N times the training and
scoring time.

Training: AdamW, one-cycle learning rate, gradient clipping, label smoothing, class-balanced
loss, SpecAugment masking and optional mixup; an exponential moving average (EMA) of the weights
is what gets validated and kept, which evens out the epoch-to-epoch swings that a few hundred
clips give. Early stopping watches the unweighted accuracy (UA) of a validation set of held-out
speakers and keeps the *latest* epoch whose UA is not clearly worse than the best so far (within
``early_stopping_tolerance_se`` standard errors, ``0.5 / sqrt(n_validation)`` each); training
stops ``patience`` epochs after that epoch. A validation set of a few speakers cannot tell
plateau epochs apart, and on RAVDESS the later, annealed epochs of the one-cycle schedule
generalise better: in speaker-independent folds, test UA kept rising to the end of the schedule
while validation UA on three other speakers peaked half-way and then wandered within a few
points, so keeping the best validation epoch stopped too early and cost up to 0.15 UA on a fold.

Feature-space augmentation (masking, mixup) happens on the fly here; waveform augmentation
(noise, telephone, ...) happens once at extraction (:mod:`ser_udfs.audio.augment`) because training
reads features, not waveforms.

The same loop runs in one process or in each process of a DDP group
(:mod:`training.models.cnn_distributed`): each rank takes its share of every batch, rank 0 decides
early stopping and broadcasts the decision.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Literal, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ser_udfs.encoders.torch_runtime import resolve_device
from ser_udfs.errors import UserError
from training.fitting import EarlyStopping, TrainingHistory, balanced_row_weights
from training.metrics import loss_and_ua
from training.speaker_norm import STATS_NORMALISATIONS, StatsNormalisation
from training.stats_inputs import check_stats_inputs

logger = logging.getLogger(__name__)

CNN_INPUTS = ("log_mel", "mfcc")
MIN_FRAMES = 16


@dataclass(frozen=True)
class CnnConfig:
    """Architecture and training settings of the CNN (``[cnn]`` in ``conf/train_cnn.toml``).

    ``stats_fusion_weight > 0`` also fits a class-balanced logistic regression on the stats
    vectors, normalised as ``stats_normalisation`` says (:class:`training.models.logreg.LogregConfig`)
    with ``C = stats_regularisation_c`` (or chosen among ``stats_regularisation_search``, as
    ``logreg.regularisation_search`` does; with ``stats_per_corpus_weights`` weights of each
    training corpus's own, as ``logreg.per_corpus_weights``), and fuses it with the CNN at that
    weight (:mod:`training.models.fusion`), or at the one of ``stats_fusion_weight_search`` that
    fuses best on the fit's held-out speakers.
    """

    inputs: tuple[str, ...] = ("log_mel",)
    normalisation: Literal["utterance", "dataset"] = "utterance"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    pooling: Literal["attention", "mean_max"] = "attention"
    dropout: float = 0.3
    max_epochs: int = 60
    patience: int = 20
    early_stopping_tolerance_se: float = 2.0
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    class_balanced: bool = True
    mixup_alpha: float = 0.0
    ema_decay: float = 0.995
    gradient_clip_norm: float = 5.0
    freq_masks: int = 2
    freq_mask_max_rows: int = 16
    time_masks: int = 2
    time_mask_max_frames: int = 12
    validation_fraction: float = 0.15
    torch_threads: int = 0
    ensemble: int = 1
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    stats_fusion_weight: float = 0.0
    stats_inputs: tuple[str, ...] = ("stats",)
    stats_normalisation: StatsNormalisation = "speaker"
    stats_regularisation_c: float = 0.1
    stats_regularisation_search: tuple[float, ...] = ()
    stats_per_corpus_weights: bool = False
    stats_fusion_weight_search: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.inputs or set(self.inputs) - set(CNN_INPUTS) or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"cnn.inputs must be distinct names from {list(CNN_INPUTS)}, got {list(self.inputs)}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError("cnn.channels must list at least one positive channel count")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("cnn.dropout and cnn.label_smoothing must lie in [0, 1)")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("cnn.max_epochs, cnn.patience and cnn.batch_size must be at least 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("cnn.validation_fraction must lie in (0, 1)")
        if self.mixup_alpha < 0:
            raise ValueError("cnn.mixup_alpha must be >= 0 (0 turns mixup off)")
        if self.early_stopping_tolerance_se < 0:
            raise ValueError("cnn.early_stopping_tolerance_se must be >= 0")
        if not 0 <= self.ema_decay < 1 or self.gradient_clip_norm < 0:
            raise ValueError("cnn.ema_decay must lie in [0, 1) and cnn.gradient_clip_norm be >= 0 (0 = off)")
        if self.ensemble < 1:
            raise ValueError("cnn.ensemble must be at least 1 (the number of networks averaged)")
        if not 0 <= self.stats_fusion_weight < 1:
            raise ValueError("cnn.stats_fusion_weight must lie in [0, 1) (0 = no stats model)")
        check_stats_inputs(self.stats_inputs, setting="cnn.stats_inputs")
        if self.stats_normalisation not in STATS_NORMALISATIONS or self.stats_regularisation_c <= 0:
            raise ValueError(f"cnn.stats_normalisation must be one of {list(STATS_NORMALISATIONS)} and "
                             "cnn.stats_regularisation_c positive")
        if any(c <= 0 for c in self.stats_regularisation_search):
            raise ValueError("cnn.stats_regularisation_search must hold positive values")
        if self.stats_fusion_weight_search and (
                self.stats_fusion_weight == 0 or not all(0 < weight < 1 for weight in self.stats_fusion_weight_search)):
            raise ValueError("cnn.stats_fusion_weight_search must hold weights in (0, 1), and needs "
                             "cnn.stats_fusion_weight > 0 (the weight of a fit that holds out no speakers)")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"cnn.device must be cpu, cuda or auto, got {self.device!r}")


@dataclass(frozen=True)
class CnnArchitecture:
    """What is needed to rebuild the network around saved weights (stored in ``config.json``)."""

    inputs: tuple[str, ...]
    input_rows: tuple[int, ...]
    n_classes: int
    channels: tuple[int, ...]
    pooling: Literal["attention", "mean_max"]
    dropout: float
    normalisation: Literal["utterance", "dataset"]
    members: int = 1

    @classmethod
    def from_config(cls, config: CnnConfig, *, input_rows: tuple[int, ...], n_classes: int) -> "CnnArchitecture":
        """Architecture for ``config`` on inputs with ``input_rows`` rows each."""
        return cls(
            inputs=config.inputs,
            input_rows=input_rows,
            n_classes=n_classes,
            channels=config.channels,
            pooling=config.pooling,
            dropout=config.dropout,
            normalisation=config.normalisation,
            members=config.ensemble,
        )


class EmotionCnn(nn.Module):
    """Conv blocks over a ``[rows, frames]`` map, temporal pooling, linear classifier.

    Input ``[batch, rows, frames]`` (unnormalised dB / MFCC values), output logits
    ``[batch, n_classes]``. Any number of frames ≥ 16 is accepted.
    """

    def __init__(self, architecture: CnnArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        rows = sum(architecture.input_rows)
        if architecture.normalisation == "dataset":
            self.register_buffer("row_mean", torch.zeros(rows))
            self.register_buffer("row_std", torch.ones(rows))
        blocks: list[nn.Module] = []
        in_channels = 1
        for out_channels in architecture.channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.GELU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        if architecture.pooling == "attention":
            self.attention = nn.Sequential(
                nn.Conv1d(in_channels, in_channels // 2 or 1, kernel_size=1),
                nn.Tanh(),
                nn.Conv1d(in_channels // 2 or 1, 1, kernel_size=1),
            )
        self.dropout = nn.Dropout(architecture.dropout)
        self.classifier = nn.Linear(2 * in_channels, architecture.n_classes)

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """Per-utterance (mean per row, one std) or training-set row normalisation of ``[b, rows, frames]``."""
        if self.architecture.normalisation == "dataset":
            return (features - self.row_mean[:, None]) / self.row_std[:, None]
        centred = features - features.mean(dim=2, keepdim=True)
        return centred / (centred.std(dim=(1, 2), keepdim=True) + 1e-5)

    def forward(self, features: torch.Tensor, *, already_normalised: bool = False) -> torch.Tensor:
        """Logits ``[b, n_classes]`` from features ``[b, rows, frames]``.

        ``already_normalised`` skips :meth:`normalise` (training normalises, then masks).
        """
        normalised = features if already_normalised else self.normalise(features)
        hidden = self.blocks(normalised[:, None])  # [b, c, rows', frames']
        sequence = hidden.mean(dim=2)  # [b, c, frames']
        if self.architecture.pooling == "attention":
            weights = torch.softmax(self.attention(sequence), dim=2)  # [b, 1, frames']
            mean = (sequence * weights).sum(dim=2)
            variance = ((sequence - mean[:, :, None]) ** 2 * weights).sum(dim=2)
            pooled = torch.cat([mean, torch.sqrt(variance + 1e-5)], dim=1)
        else:
            pooled = torch.cat([sequence.mean(dim=2), sequence.amax(dim=2)], dim=1)
        return self.classifier(self.dropout(pooled))


class CnnEnsemble(nn.Module):
    """``architecture.members`` networks of one architecture whose class probabilities are averaged.

    Input ``[batch, rows, frames]`` as for :class:`EmotionCnn`; output ``[batch, n_classes]``, the
    log of the members' mean probabilities, so that a softmax of it gives that mean.
    """

    def __init__(self, architecture: CnnArchitecture, members: list[EmotionCnn] | None = None) -> None:
        super().__init__()
        self.architecture = architecture
        single = replace(architecture, members=1)
        self.members = nn.ModuleList(members or [EmotionCnn(single) for _ in range(architecture.members)])
        if len(self.members) != architecture.members or any(m.architecture != single for m in self.members):
            raise ValueError(f"an ensemble of {architecture.members} needs that many networks of one architecture")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log mean probabilities ``[b, n_classes]`` from features ``[b, rows, frames]``."""
        probabilities = torch.stack([torch.softmax(member(features), dim=1) for member in self.members]).mean(dim=0)
        return torch.log(probabilities.clamp_min(1e-12))


CnnModel = EmotionCnn | CnnEnsemble


def networks(model: CnnModel) -> list[EmotionCnn]:
    """The networks a CNN model consists of (one, or an ensemble's members)."""
    return list(model.members) if isinstance(model, CnnEnsemble) else [model]


def model_input(batch: Mapping[str, np.ndarray], inputs: tuple[str, ...]) -> np.ndarray:
    """Stack the CNN's input maps along the row axis.

    Parameters
    ----------
    batch
        Feature arrays, e.g. ``{"log_mel": [n, n_mels, frames], "mfcc": [n, c, frames]}``.
    inputs
        Which of them to use, in order.

    Returns
    -------
    np.ndarray
        float32 ``[n, sum of rows, frames]``.
    """
    missing = [name for name in inputs if name not in batch]
    if missing:
        raise UserError(f"the model needs feature(s) {missing}, which the input does not have")
    arrays = [np.asarray(batch[name], dtype=np.float32) for name in inputs]
    shapes = {name: array.shape for name, array in zip(inputs, arrays)}
    if any(array.ndim != 3 for array in arrays) or len({array.shape[0] for array in arrays}) != 1 or len(
        {array.shape[2] for array in arrays}
    ) != 1:
        raise UserError(f"CNN inputs must be [n, rows, frames] with equal n and frames, got shapes {shapes}")
    if arrays[0].shape[2] < MIN_FRAMES:
        raise UserError(f"CNN inputs need at least {MIN_FRAMES} frames, got shapes {shapes}")
    return np.concatenate(arrays, axis=1)


def predict_proba(model: CnnModel, features: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` for features ``[n, rows, frames]`` (on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            logits = model(torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device))
            outputs.append(torch.softmax(logits, dim=1).cpu().numpy())
    if not outputs:
        return np.zeros((0, model.architecture.n_classes), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


#: Seed distance between ensemble members: far above any fold count, so no two runs share a seed.
MEMBER_SEED_STRIDE = 1000


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member`` (0-based) of a run seeded ``seed``; member 0 keeps ``seed``."""
    return seed + MEMBER_SEED_STRIDE * member


def build_model(
    config: CnnConfig, *, input_rows: tuple[int, ...], n_classes: int, train_features: np.ndarray, seed: int
) -> EmotionCnn:
    """A freshly initialised network (seeded); ``dataset`` normalisation takes its row statistics
    from ``train_features`` ``[n, rows, frames]``. One network even when ``config.ensemble > 1``:
    each member is built and trained on its own (:func:`member_seed`)."""
    torch.manual_seed(seed)
    architecture = CnnArchitecture.from_config(config, input_rows=input_rows, n_classes=n_classes)
    model = EmotionCnn(replace(architecture, members=1))
    if config.normalisation == "dataset":
        model.row_mean.copy_(torch.from_numpy(train_features.mean(axis=(0, 2))))
        model.row_std.copy_(torch.from_numpy(train_features.std(axis=(0, 2)) + 1e-5))
    return model


def train_model(
    model: nn.Module,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    config: CnnConfig,
    *,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    log_prefix: str = "",
    train_corpora: np.ndarray | None = None,
) -> TrainingHistory:
    """Train ``model`` in place; with ``validation``, stop early and restore the kept epoch.

    Parameters
    ----------
    model
        An :class:`EmotionCnn`, or one wrapped in ``DistributedDataParallel``.
    train_features, train_labels
        ``[n, rows, frames]`` float32 and ``[n]`` int class indices.
    seed
        Seeds batch order, masking, mixup and dropout (the same on every run).
    validation
        ``(features [m, rows, frames], labels [m])`` of held-out speakers for early stopping:
        the latest epoch whose UA is within ``config.early_stopping_tolerance_se`` standard
        errors of the best is kept, and training stops ``config.patience`` epochs after it.
    epochs
        Number of epochs without validation (defaults to ``config.max_epochs``); the learning
        rate schedule always spans ``config.max_epochs`` so that a refit reproduces the
        conditions under which the number of epochs was chosen.
    rank, world_size
        Position in a DDP group: the rank trains on its share of every batch.
    train_corpora
        The corpus of each training row ``[n]``. With ``config.class_balanced`` every (corpus,
        class) cell weighs the same in the loss (:func:`training.fitting.balanced_row_weights`),
        so a large corpus does not drown a small one; ``None`` (or one corpus): classes alone.

    The network trains on ``config.device`` and is returned on the CPU. Batch order, masks and
    mixup partners are drawn on the CPU, so a GPU run sees the same batches as a CPU run (its
    arithmetic, hence its weights, still differ slightly).
    """
    network: EmotionCnn = getattr(model, "module", model)
    device = _place_network(network, config, world_size)
    run = _EpochRunner(model, network, train_features, train_labels, train_corpora, config, seed=seed, rank=rank,
                       world_size=world_size, device=device)
    n_epochs = config.max_epochs if validation is not None else (epochs or config.max_epochs)
    history = TrainingHistory()
    stopping = None
    if validation is not None:
        tolerance = config.early_stopping_tolerance_se * 0.5 / math.sqrt(len(validation[1]))
        stopping = EarlyStopping(history, config.patience, tolerance=tolerance)
    started = time.perf_counter()
    for epoch in range(1, n_epochs + 1):
        epoch_started = time.perf_counter()
        history.train_loss.append(run.epoch(epoch))
        history.learning_rate.append(float(run.scheduler.get_last_lr()[0]))
        message = f"{log_prefix}epoch {epoch}/{n_epochs} train loss {history.train_loss[-1]:.3f}"
        stop = False
        if stopping is not None:
            assert validation is not None
            loss, ua = loss_and_ua(predict_proba(run.averaged, validation[0]), validation[1])
            stopping.record(epoch, loss, ua, run.averaged.state_dict)
            stop = stopping.should_stop(epoch) and epoch < n_epochs
            message += (f", validation loss {loss:.3f} UA {ua:.3f}"
                        f" (best {stopping.best_ua:.3f}, keeping epoch {history.best_epoch})")
        else:
            history.best_epoch = epoch
        if rank == 0:
            logger.info("%s, %.1f s", message, time.perf_counter() - epoch_started)
        if _agree_on_stop(stop, world_size):
            if rank == 0:
                logger.info("%sstopping early after epoch %d", log_prefix, epoch)
            break
    kept = stopping.best_state if stopping is not None and stopping.best_state is not None else None
    network.load_state_dict(kept if kept is not None else run.averaged.state_dict())
    network.to("cpu", memory_format=torch.contiguous_format)
    history.seconds = time.perf_counter() - started
    return history


def _place_network(network: EmotionCnn, config: CnnConfig, world_size: int) -> torch.device:
    """Move ``network`` to ``config.device`` (channels-last on a single CPU process); return the device."""
    device = resolve_device(config.device)
    if world_size > 1 and device.type != "cpu":
        raise UserError("distributed CNN training runs on the CPU (gloo): set cnn.device = \"cpu\"")
    network.to(device)
    if world_size == 1 and device.type == "cpu":
        # oneDNN's convolutions run about 1.7x faster on one core with channels-last weights (the
        # activations follow the weights); the returned network is put back in the default layout.
        network.to(memory_format=torch.channels_last)
    return device


class _EpochRunner:
    """One rank's optimiser, schedule, data and random streams; :meth:`epoch` trains one epoch.

    ``averaged`` is the network that is validated and kept: an EMA copy (``config.ema_decay >
    0``) or the trained network itself.
    """

    def __init__(self, model: nn.Module, network: EmotionCnn, train_features: np.ndarray, train_labels: np.ndarray,
                 train_corpora: np.ndarray | None, config: CnnConfig, *, seed: int, rank: int, world_size: int,
                 device: torch.device) -> None:
        self.model, self.network, self.config = model, network, config
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.n_rows = len(train_labels) - len(train_labels) % world_size
        self.rank_batch = max(1, config.batch_size // world_size)
        self.steps_per_epoch = math.ceil(self.n_rows // world_size / self.rank_batch)
        torch.manual_seed(seed + rank)
        self.generator = torch.Generator().manual_seed(seed + 7919 * (rank + 1))
        self.mixup_rng = np.random.default_rng([seed, rank])
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.learning_rate, total_steps=config.max_epochs * self.steps_per_epoch,
            pct_start=0.2,
        )
        corpora = np.zeros(len(train_labels)) if train_corpora is None else train_corpora
        self.row_weights = (torch.from_numpy(balanced_row_weights(train_labels, corpora).astype(np.float32)).to(device)
                            if config.class_balanced else None)
        self.features = torch.from_numpy(np.ascontiguousarray(train_features, dtype=np.float32)).to(device)
        self.labels = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(device)
        self.device = device
        self.averaged = copy.deepcopy(network) if config.ema_decay > 0 else network

    def epoch(self, epoch: int) -> float:
        """Train epoch ``epoch`` (1-based) on this rank's share of every batch; return its mean loss."""
        config = self.config
        self.model.train()
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        own = order[: self.n_rows][self.rank :: self.world_size].to(self.device)
        total_loss = torch.zeros((), device=self.device)  # summed on the device: no wait for a GPU per step
        for step in range(self.steps_per_epoch):
            index = own[step * self.rank_batch : (step + 1) * self.rank_batch]
            weights = None if self.row_weights is None else self.row_weights[index]
            loss = _training_step(self.model, self.network, self.features[index], self.labels[index], config,
                                  weights, self.generator, self.mixup_rng)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.gradient_clip_norm > 0:
                nn.utils.clip_grad_norm_(self.network.parameters(), config.gradient_clip_norm)
            self.optimizer.step()
            self.scheduler.step()
            if self.averaged is not self.network:
                _update_average(self.averaged, self.network, config.ema_decay,
                                step=(epoch - 1) * self.steps_per_epoch + step)
            total_loss += loss.detach() * len(index)
        return float(total_loss) / max(1, self.n_rows // self.world_size)


def _training_step(
    model: nn.Module,
    network: EmotionCnn,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: CnnConfig,
    row_weights: torch.Tensor | None,
    generator: torch.Generator,
    mixup_rng: np.random.Generator,
) -> torch.Tensor:
    normalised = spec_augment(network.normalise(features), config, generator)
    targets = F.one_hot(labels, network.architecture.n_classes).float()
    if config.mixup_alpha > 0:
        mix = float(mixup_rng.beta(config.mixup_alpha, config.mixup_alpha))
        partner = torch.randperm(len(labels), generator=generator).to(features.device)
        normalised = mix * normalised + (1 - mix) * normalised[partner]
        targets = mix * targets + (1 - mix) * targets[partner]
        if row_weights is not None:
            row_weights = mix * row_weights + (1 - mix) * row_weights[partner]
    # Through ``model`` (not ``network``) so that a DDP wrapper synchronises the gradients.
    logits = model(normalised, already_normalised=True)
    return _soft_cross_entropy(logits, targets, config.label_smoothing, row_weights)


def spec_augment(normalised: torch.Tensor, config: CnnConfig, generator: torch.Generator) -> torch.Tensor:
    """Zero random bands of rows and frames of a normalised ``[b, rows, frames]`` batch (SpecAugment)."""
    masked = normalised.clone()
    n_rows, n_frames = masked.shape[1], masked.shape[2]
    for axis, count, max_width, size in (
        (1, config.freq_masks, config.freq_mask_max_rows, n_rows),
        (2, config.time_masks, config.time_mask_max_frames, n_frames),
    ):
        for _ in range(count):
            widths = torch.randint(0, max(1, min(max_width, size // 2)) + 1, (len(masked),), generator=generator)
            starts = (torch.rand(len(masked), generator=generator) * (size - widths + 1)).long()
            positions = torch.arange(size)[None, :]
            band = ((positions >= starts[:, None]) & (positions < (starts + widths)[:, None])).to(masked.device)
            masked = masked.masked_fill(band[:, :, None] if axis == 1 else band[:, None, :], 0.0)
    return masked


def _update_average(averaged: nn.Module, network: nn.Module, decay: float, *, step: int) -> None:
    """EMA of parameters and float buffers (batch-norm statistics), decay warmed up over the first steps."""
    decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for average, current in zip(averaged.state_dict().values(), network.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - decay)
            else:
                average.copy_(current)


def _soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float, row_weights: torch.Tensor | None
) -> torch.Tensor:
    n_classes = logits.shape[1]
    smoothed = targets * (1 - smoothing) + smoothing / n_classes
    per_row = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1)
    if row_weights is None:
        return per_row.mean()
    return (per_row * row_weights).sum() / row_weights.sum()


def _agree_on_stop(stop: bool, world_size: int) -> bool:
    if world_size == 1:
        return stop
    flag = torch.tensor([1 if stop else 0], dtype=torch.int64)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
