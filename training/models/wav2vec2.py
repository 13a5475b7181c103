"""Fine-tuning a wav2vec2-family encoder with a sequence-classification head (``--model wav2vec2``).

The model is ``AutoModelForAudioClassification`` on the checkpoint given by ``--pretrained``
(wav2vec2, HuBERT, WavLM, ...: mean pooling over the valid frames → projector → classifier, or
the checkpoint's own emotion head mapped onto our labels, see :mod:`training.models.hf_classifier`). It reads
the whole preprocessed clip (the features table's ``waveform`` column, 3 s at 16 kHz by
default) through the model's own feature extractor (:mod:`ser_udfs.encoders.inputs`).

Training: the convolutional feature encoder is frozen (``freeze_feature_encoder``), optionally
also the first ``freeze_layers`` transformer layers (with everything below them); AdamW with a
higher learning rate for the new head, linear warm-up then linear decay, gradient accumulation,
gradient clipping, class-balanced cross-entropy, the model's own SpecAugment-style time masking
(``mask_time_prob``) and LayerDrop; mixed precision (bf16, or fp16 with loss scaling) on a GPU,
fp32 on the CPU. Early stopping on the unweighted accuracy of held-out speakers of the training
side, the best epoch's weights kept; the folds, metrics and bundle follow the same protocol as
the other models (:mod:`training.protocol`, through :class:`training.kinds.Wav2Vec2Kind`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ser_udfs.encoders.inputs import encoder_batch, receptive_field
from ser_udfs.encoders.torch_runtime import autocast, resolve_device, resolve_precision, to_device
from ser_udfs.errors import UserError
from ser_udfs.settings import to_dict
from training.bundle.format import model_from_state, read_hf_model, write_hf_model
from training.data import WAVEFORM_INPUT, waveform_input
from training.fitting import EarlyStopping, TrainingHistory, balanced_class_weights
from training.metrics import loss_and_ua
from training.splits import SplitConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings (``[wav2vec2]`` in ``conf/train_wav2vec2.toml``).

    ``pretrained`` is the checkpoint (``--pretrained`` overrides it); ``freeze_layers`` freezes
    the first N transformer layers and everything below them; ``mask_time_prob`` and
    ``layerdrop`` are set on the model config when the architecture has them;
    ``classifier_proj_size`` and ``use_weighted_layer_sum`` shape a new head (a checkpoint's own
    emotion head is kept as it is). The effective batch is ``batch_size *
    gradient_accumulation_steps``.
    """

    pretrained: str = ""
    freeze_feature_encoder: bool = True
    freeze_layers: int = 0
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    mask_time_prob: float = 0.05
    layerdrop: float = 0.05
    max_epochs: int = 15
    patience: int = 5
    batch_size: int = 8
    gradient_accumulation_steps: int = 4
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    class_balanced: bool = True
    validation_fraction: float = 0.15
    eval_batch_size: int = 16
    trim_padding: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if min(self.max_epochs, self.patience, self.batch_size, self.gradient_accumulation_steps, self.eval_batch_size) < 1:
            raise ValueError("wav2vec2.max_epochs, patience, batch_size, gradient_accumulation_steps and "
                             "eval_batch_size must be at least 1")
        if self.freeze_layers < 0 or self.torch_threads < 0:
            raise ValueError("wav2vec2.freeze_layers and wav2vec2.torch_threads must be >= 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.validation_fraction < 1:
            raise ValueError("wav2vec2.warmup_fraction must lie in [0, 1) and validation_fraction in (0, 1)")
        if self.learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ValueError("wav2vec2.learning_rate and head_learning_rate must be positive")


@dataclass(frozen=True)
class Wav2Vec2TrainConfig:
    """Everything the train job decides for ``--model wav2vec2`` (``conf/train_wav2vec2.toml``)."""

    model: Literal["wav2vec2"] = "wav2vec2"
    taxonomy: str = "core6"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    wav2vec2: FinetuneConfig = field(default_factory=FinetuneConfig)

    def model_settings(self) -> dict[str, Any]:
        """The fine-tuning hyper-parameters, as a dict."""
        return to_dict(self.wav2vec2)


class Wav2Vec2Classifier:
    """A fine-tuned ``AutoModelForAudioClassification`` with its extractor: a bundle's predictor.

    Parameters
    ----------
    model
        The classification model (on the device it runs on).
    extractor
        Its feature extractor; ``extractor.sampling_rate`` is the rate of the waveforms it takes.
    trim_padding
        Cut the zero padding of preprocessed clips (:func:`ser_udfs.encoders.inputs.encoder_batch`).
    batch_size
        Clips per forward pass.
    precision
        ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    """

    inputs = (WAVEFORM_INPUT,)

    def __init__(self, model: Any, extractor: Any, *, trim_padding: bool, batch_size: int = 16,
                 precision: str = "auto") -> None:
        self.model = model
        self.extractor = extractor
        self.trim_padding = trim_padding
        self.batch_size = batch_size
        self.precision = precision

    @property
    def n_classes(self) -> int:
        """Number of outputs."""
        return len(self.model.config.id2label)

    def predict_proba(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class probabilities float32 ``[n, n_classes]`` for ``batch["waveform"]`` ``[n, samples]``."""
        return classifier_probabilities(
            self.model, self.extractor, waveform_input(batch),
            trim_padding=self.trim_padding, batch_size=self.batch_size, precision=self.precision,
        )

    def save_weights(self, path: Path) -> dict[str, Any]:
        """Write ``model.safetensors`` and ``encoder/``; return the bundle's ``config.json`` entries."""
        hf_entries = write_hf_model(path, self.model.state_dict(), self.model.config, self.extractor)
        return {
            "model_kind": "wav2vec2",
            "inputs": list(self.inputs),
            "architecture": {
                **hf_entries,
                "trim_padding": self.trim_padding,
                "batch_size": self.batch_size,
            },
        }

    @classmethod
    def from_bundle(cls, files: Mapping[str, bytes], config: Mapping[str, Any], *, where: str) -> "Wav2Vec2Classifier":
        """Rebuild from a bundle's files by name and its parsed ``config.json`` (weights checked).

        ``where`` names the bundle in messages.
        """
        from transformers import AutoModelForAudioClassification

        architecture, hf_config, extractor, tensors = read_hf_model(files, config, where=where)
        model = model_from_state(lambda: AutoModelForAudioClassification.from_config(hf_config), tensors, where=where)
        model.to(resolve_device("auto"))
        return cls(model, extractor, trim_padding=bool(architecture.get("trim_padding", True)),
                   batch_size=int(architecture.get("batch_size", 16)))


def classifier_probabilities(
    model: Any, extractor: Any, waveforms: np.ndarray, *, trim_padding: bool, batch_size: int, precision: str = "auto"
) -> np.ndarray:
    """Softmax outputs float32 ``[n, n_classes]`` of a classification model for clips ``[n, samples]``."""
    device = next(model.parameters()).device
    resolved = resolve_precision(precision, device)
    min_samples = _min_samples(model.config)
    model.eval()
    outputs = [np.zeros((0, len(model.config.id2label)), dtype=np.float32)]
    for start in range(0, len(waveforms), batch_size):
        inputs = encoder_batch(extractor, waveforms[start : start + batch_size], sample_rate_hz=extractor.sampling_rate,
                               trim_padding=trim_padding, min_samples=min_samples)
        with torch.inference_mode(), autocast(device, resolved):
            logits = model(**inputs.tensors(device)).logits
        outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(outputs)


def freeze_parameters(model: Any, *, feature_encoder: bool, layers: int) -> None:
    """Freeze the convolutional feature encoder and/or the first ``layers`` transformer layers.

    Freezing layers also freezes what feeds them: the feature projection, the convolutional
    position embedding, the input layer norm (for post-norm models) and the mask embedding.
    """
    base = model.base_model
    if feature_encoder or layers > 0:
        if hasattr(model, "freeze_feature_encoder"):
            model.freeze_feature_encoder()
        else:
            base.feature_extractor.requires_grad_(False)
    if layers <= 0:
        return
    encoder = getattr(base, "encoder", None)
    stack = getattr(encoder, "layers", None)
    if stack is None:
        raise UserError(f"cannot freeze transformer layers of {type(model).__name__}: it has no encoder.layers")
    if layers > len(stack):
        raise UserError(f"wav2vec2.freeze_layers = {layers} but the model has only {len(stack)} transformer layers")
    below = [getattr(base, "feature_projection", None), getattr(encoder, "pos_conv_embed", None)]
    if not getattr(model.config, "do_stable_layer_norm", True):
        below.append(getattr(encoder, "layer_norm", None))
    for module in [*below, *stack[:layers]]:
        if module is not None:
            module.requires_grad_(False)
    if getattr(base, "masked_spec_embed", None) is not None:
        base.masked_spec_embed.requires_grad_(False)


def fine_tune(
    model: Any,
    extractor: Any,
    waveforms: np.ndarray,
    labels: np.ndarray,
    config: FinetuneConfig,
    *,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
    log_prefix: str = "",
) -> TrainingHistory:
    """Fine-tune ``model`` in place; with ``validation``, stop early and restore the best epoch.

    Parameters
    ----------
    model
        An ``AutoModelForAudioClassification`` on the device to train on.
    extractor
        Its feature extractor (``sampling_rate`` = the rate of ``waveforms``).
    waveforms, labels
        float32 ``[n, samples]`` preprocessed clips and int ``[n]`` class indices.
    seed
        Seeds batch order, dropout and masking.
    validation
        ``(waveforms [m, samples], labels [m])`` of held-out speakers.
    epochs
        Epochs without validation (default ``config.max_epochs``); the learning-rate schedule
        always spans ``config.max_epochs`` (as for the CNN), so a refit repeats the conditions
        under which the epoch count was chosen.
    """
    run = _FineTuneRun(model, extractor, waveforms, labels, config, seed=seed)
    n_epochs = config.max_epochs if validation is not None else (epochs or config.max_epochs)
    torch.manual_seed(seed)
    history = TrainingHistory()
    stopping = EarlyStopping(history, config.patience) if validation is not None else None
    started = time.perf_counter()
    logger.info("%sfine-tuning %d of %d parameters on %s (%s), %d clips, %d optimiser steps per epoch",
                log_prefix, sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.parameters()), run.device, run.precision, len(labels), run.steps_per_epoch)
    for epoch in range(1, n_epochs + 1):
        epoch_started = time.perf_counter()
        history.train_loss.append(run.epoch(epoch))
        seconds = time.perf_counter() - epoch_started
        history.learning_rate.append(float(run.scheduler.get_last_lr()[0]))  # the encoder's
        message = f"{log_prefix}epoch {epoch}/{n_epochs} train loss {history.train_loss[-1]:.3f}"
        if stopping is not None:
            assert validation is not None
            probabilities = classifier_probabilities(model, extractor, validation[0], trim_padding=config.trim_padding,
                                                     batch_size=config.eval_batch_size, precision=run.precision)
            validation_loss, validation_ua = loss_and_ua(probabilities, validation[1])
            stopping.record(epoch, validation_loss, validation_ua, model.state_dict)
            message += (f", validation loss {validation_loss:.3f} UA {validation_ua:.3f}"
                        f" (best {history.validation_ua[history.best_epoch - 1]:.3f} at epoch {history.best_epoch})")
        else:
            history.best_epoch = epoch
        logger.info("%s, %.1f s (%.1f clips/s)", message, seconds, len(labels) / max(seconds, 1e-9))
        if stopping is not None and stopping.should_stop(epoch):
            logger.info("%sstopping early after epoch %d", log_prefix, epoch)
            break
    if stopping is not None and stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


class _FineTuneRun:
    """The optimiser, schedule and batches of one fine-tuning run; :meth:`epoch` trains one epoch.

    Freezes what ``config`` says, turns on gradient checkpointing if asked, and groups the
    micro-batches of ``config.batch_size`` clips into optimiser steps of
    ``gradient_accumulation_steps`` micro-batches, each weighted by its share of the step's rows.
    """

    def __init__(self, model: Any, extractor: Any, waveforms: np.ndarray, labels: np.ndarray,
                 config: FinetuneConfig, *, seed: int) -> None:
        self.model, self.extractor, self.waveforms, self.config, self.seed = model, extractor, waveforms, config, seed
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        freeze_parameters(model, feature_encoder=config.freeze_feature_encoder, layers=config.freeze_layers)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.optimizer = torch.optim.AdamW(_parameter_groups(model, config), weight_decay=config.weight_decay)
        self.n_rows = len(labels)
        self.micro_batches = math.ceil(self.n_rows / config.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_batches / config.gradient_accumulation_steps)
        self.scheduler = _warmup_linear_decay(self.optimizer, config.max_epochs * self.steps_per_epoch,
                                              config.warmup_fraction)
        self.class_weights = (balanced_class_weights(labels, len(model.config.id2label)).to(self.device)
                              if config.class_balanced else None)
        self.targets = np.asarray(labels, dtype=np.int64)
        self.min_samples = _min_samples(model.config)

    def epoch(self, epoch: int) -> float:
        """Train epoch ``epoch`` (1-based); return its mean training loss."""
        config, model = self.config, self.model
        model.train()
        order = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).numpy()
        total_loss = torch.zeros((), device=self.device)  # summed on the device: no wait for the GPU per step
        self.optimizer.zero_grad(set_to_none=True)
        step_rows = config.gradient_accumulation_steps * config.batch_size
        for micro in range(self.micro_batches):
            index = order[micro * config.batch_size : (micro + 1) * config.batch_size]
            group = micro // config.gradient_accumulation_steps
            group_rows = min(self.n_rows, (group + 1) * step_rows) - group * step_rows
            inputs = encoder_batch(self.extractor, self.waveforms[index], sample_rate_hz=self.extractor.sampling_rate,
                                   trim_padding=config.trim_padding, min_samples=self.min_samples)
            with autocast(self.device, self.precision):
                logits = model(**inputs.tensors(self.device)).logits
            loss = F.cross_entropy(logits.float(), to_device(self.targets[index], self.device), weight=self.class_weights)
            scaled = loss * (len(index) / group_rows)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total_loss += loss.detach() * len(index)
            if (micro + 1) % config.gradient_accumulation_steps == 0 or micro == self.micro_batches - 1:
                _optimiser_step(model, self.optimizer, self.scaler, config.max_grad_norm)
                self.scheduler.step()
        return float(total_loss) / max(1, self.n_rows)


def _min_samples(model_config: Any) -> int:
    kernel = tuple(getattr(model_config, "conv_kernel", ()))
    return receptive_field(kernel, tuple(getattr(model_config, "conv_stride", ()))) if kernel else 1


def _parameter_groups(model: Any, config: FinetuneConfig) -> list[dict[str, Any]]:
    """The pretrained encoder at ``learning_rate``, the new head at ``head_learning_rate``."""
    prefix = f"{model.base_model_prefix}."
    encoder, head = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (encoder if name.startswith(prefix) else head).append(parameter)
    return [
        {"params": encoder, "lr": config.learning_rate},
        {"params": head, "lr": config.head_learning_rate},
    ]


def _warmup_linear_decay(optimizer: Any, total_steps: int, warmup_fraction: float) -> Any:
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimiser_step(model: Any, optimizer: Any, scaler: Any, max_grad_norm: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)

