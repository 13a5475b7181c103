"""Fine-tuning a wav2vec2-family encoder with a sequence-classification head (``--model wav2vec2``).

The model is ``AutoModelForAudioClassification`` on the checkpoint given by ``--pretrained``
(wav2vec2, HuBERT, WavLM, ...: mean pooling over the valid frames → projector → classifier, or
the checkpoint's own emotion head mapped onto our labels, see :mod:`training.hf_audio`). It reads
the whole preprocessed clip (the features table's ``waveform`` column, 3 s at 16 kHz by
default) through the model's own feature extractor (:mod:`ser_udfs.embeddings`).

Training: the convolutional feature encoder is frozen (``freeze_feature_encoder``), optionally
also the first ``freeze_layers`` transformer layers (with everything below them); AdamW with a
higher learning rate for the new head, linear warm-up then linear decay, gradient accumulation,
gradient clipping, class-balanced cross-entropy, the model's own SpecAugment-style time masking
(``mask_time_prob``) and LayerDrop; mixed precision (bf16, or fp16 with loss scaling) on a GPU,
fp32 on the CPU. Early stopping on the unweighted accuracy of held-out speakers of the training
side, the best epoch's weights kept; the folds, metrics and bundle follow the same protocol as
the other models (:func:`training.hf_audio.cross_validate_and_save`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ser_udfs.embeddings import autocast, encoder_batch, receptive_field, resolve_device, resolve_precision, to_device
from ser_udfs.errors import UserError
from ser_udfs.settings import to_dict
from training.cnn import TrainingHistory, balanced_class_weights
from training.hf_audio import (
    WAVEFORM_INPUT,
    config_from_dict,
    cross_validate_and_save,
    extractor_from_dict,
    hf_architecture,
    load_classifier,
    load_feature_extractor,
    map_labels,
    model_from_state,
    PretrainedSource,
    read_weights,
    table_waveforms,
    validation_rows,
    write_hf_files,
    write_weights,
)
from training.splits import SplitConfig

if TYPE_CHECKING:
    import pandas as pd

    from training.taxonomy import Taxonomy

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
        Cut the zero padding of preprocessed clips (:func:`ser_udfs.embeddings.encoder_batch`).
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
        if WAVEFORM_INPUT not in batch:
            raise UserError("the model needs the 'waveform' input (preprocessed clips), which the input does not have")
        return classifier_probabilities(
            self.model, self.extractor, np.asarray(batch[WAVEFORM_INPUT], dtype=np.float32),
            trim_padding=self.trim_padding, batch_size=self.batch_size, precision=self.precision,
        )

    def save_weights(self, path: Path) -> dict[str, Any]:
        """Write ``model.safetensors`` and ``encoder/``; return the bundle's ``config.json`` entries."""
        write_weights(path, self.model.state_dict())
        write_hf_files(path, self.model.config, self.extractor)
        return {
            "model_kind": "wav2vec2",
            "inputs": list(self.inputs),
            "architecture": {
                **hf_architecture(self.model.config, self.extractor),
                "trim_padding": self.trim_padding,
                "batch_size": self.batch_size,
            },
        }

    @classmethod
    def from_bundle(cls, path: Path, config: Mapping[str, Any]) -> "Wav2Vec2Classifier":
        """Rebuild from a bundle's ``config.json`` and ``model.safetensors`` (weights checked)."""
        from transformers import AutoModelForAudioClassification

        architecture = config.get("architecture") or {}
        hf_config = config_from_dict(architecture.get("hf_config") or {}, where=path)
        extractor = extractor_from_dict(architecture.get("feature_extractor") or {}, where=path)
        model = model_from_state(lambda: AutoModelForAudioClassification.from_config(hf_config), read_weights(path),
                                 where=path)
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
    device = next(model.parameters()).device
    precision = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    freeze_parameters(model, feature_encoder=config.freeze_feature_encoder, layers=config.freeze_layers)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(_parameter_groups(model, config), weight_decay=config.weight_decay)
    n_rows = len(labels)
    micro_batches = math.ceil(n_rows / config.batch_size)
    steps_per_epoch = math.ceil(micro_batches / config.gradient_accumulation_steps)
    scheduler = _warmup_linear_decay(optimizer, config.max_epochs * steps_per_epoch, config.warmup_fraction)
    class_weights = balanced_class_weights(labels, len(model.config.id2label)).to(device) if config.class_balanced else None
    targets = np.asarray(labels, dtype=np.int64)
    min_samples = _min_samples(model.config)
    n_epochs = config.max_epochs if validation is not None else (epochs or config.max_epochs)
    torch.manual_seed(seed)
    history = TrainingHistory()
    best_state: dict[str, torch.Tensor] | None = None
    best_key = (-1.0, 0.0)
    started = time.perf_counter()
    logger.info("%sfine-tuning %d of %d parameters on %s (%s), %d clips, %d optimiser steps per epoch",
                log_prefix, sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.parameters()), device, precision, n_rows, steps_per_epoch)
    for epoch in range(1, n_epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).numpy()
        total_loss = torch.zeros((), device=device)  # summed on the device: no wait for the GPU per step
        optimizer.zero_grad(set_to_none=True)
        for micro in range(micro_batches):
            index = order[micro * config.batch_size : (micro + 1) * config.batch_size]
            group = micro // config.gradient_accumulation_steps
            group_rows = min(n_rows, (group + 1) * config.gradient_accumulation_steps * config.batch_size) - (
                group * config.gradient_accumulation_steps * config.batch_size
            )
            inputs = encoder_batch(extractor, waveforms[index], sample_rate_hz=extractor.sampling_rate,
                                   trim_padding=config.trim_padding, min_samples=min_samples)
            with autocast(device, precision):
                logits = model(**inputs.tensors(device)).logits
            loss = F.cross_entropy(logits.float(), to_device(targets[index], device), weight=class_weights)
            scaled = loss * (len(index) / group_rows)
            (scaler.scale(scaled) if scaler else scaled).backward()
            total_loss += loss.detach() * len(index)
            if (micro + 1) % config.gradient_accumulation_steps == 0 or micro == micro_batches - 1:
                _optimiser_step(model, optimizer, scaler, config.max_grad_norm)
                scheduler.step()
        history.train_loss.append(float(total_loss) / max(1, n_rows))
        seconds = time.perf_counter() - epoch_started
        history.learning_rate.append(float(scheduler.get_last_lr()[0]))  # the encoder's
        message = f"{log_prefix}epoch {epoch}/{n_epochs} train loss {history.train_loss[-1]:.3f}"
        if validation is not None:
            probabilities = classifier_probabilities(model, extractor, validation[0], trim_padding=config.trim_padding,
                                                     batch_size=config.eval_batch_size, precision=precision)
            validation_loss, validation_ua = loss_and_ua(probabilities, validation[1])
            history.validation_loss.append(validation_loss)
            history.validation_ua.append(validation_ua)
            if (validation_ua, -validation_loss) > best_key:
                best_key, history.best_epoch = (validation_ua, -validation_loss), epoch
                best_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
            message += (f", validation loss {validation_loss:.3f} UA {validation_ua:.3f}"
                        f" (best {best_key[0]:.3f} at epoch {history.best_epoch})")
        else:
            history.best_epoch = epoch
        logger.info("%s, %.1f s (%.1f clips/s)", message, seconds, n_rows / max(seconds, 1e-9))
        if validation is not None and epoch - history.best_epoch >= config.patience:
            logger.info("%sstopping early after epoch %d", log_prefix, epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


def loss_and_ua(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and unweighted accuracy (mean recall over present classes) of ``[m, k]`` outputs."""
    labels = np.asarray(labels, dtype=np.int64)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
    predicted = probabilities.argmax(axis=1)
    recalls = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
    return loss, float(np.mean(recalls))


def train_wav2vec2_from_frame(
    frame: "pd.DataFrame",
    config: Wav2Vec2TrainConfig,
    *,
    feature_config: Mapping[str, Any],
    output_dir: str | Path,
    taxonomy: "Taxonomy | None" = None,
    pretrained: str | None = None,
) -> dict[str, Any]:
    """Fine-tune, test and save a wav2vec2-family bundle from features rows (``--model wav2vec2``).

    Parameters
    ----------
    frame
        Features rows with ``label``, ``corpus``, ``speaker``, ``path``, ``augmentation``,
        ``feature_config_version`` and ``waveform`` (extracted with
        ``--set output.keep_waveform=true``).
    config
        Taxonomy, seed, split and fine-tuning settings.
    feature_config
        The table's feature config dict (``"feature_config"`` of its ``_manifest.json``).
    output_dir
        The bundle directory to write.
    taxonomy
        Overrides ``config.taxonomy``.
    pretrained
        Overrides ``config.wav2vec2.pretrained`` (``--pretrained``).

    Returns
    -------
    dict
        ``{"bundle_dir", "model", "taxonomy", "labels", "split", "metrics"}`` as
        :func:`training.trainer.train_from_frame` returns.
    """
    from training.dataset import label_indices, table_feature_config
    from training.taxonomy import load_taxonomy
    from training.trainer import TrainingData

    if pretrained:
        config = replace(config, wav2vec2=replace(config.wav2vec2, pretrained=pretrained))
    settings = config.wav2vec2
    table_config = table_feature_config(frame, feature_config)
    taxonomy = taxonomy or load_taxonomy(config.taxonomy)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    extractor = load_feature_extractor(PretrainedSource.resolve(settings.pretrained))
    mapped, labels, report = map_labels(frame, taxonomy)
    waveforms = table_waveforms(mapped, table_config, extractor)
    data = TrainingData(mapped, labels, waveforms, label_indices(mapped, labels), ())
    label_maps: list[dict[str, Any]] = []

    def fit(rows: np.ndarray, *, seed: int, log_prefix: str, epochs: int | None) -> tuple[Wav2Vec2Classifier, TrainingHistory]:
        torch.manual_seed(seed)
        model, model_extractor, label_map = load_classifier(
            settings.pretrained, labels, taxonomy,
            config_overrides={"mask_time_prob": settings.mask_time_prob, "layerdrop": settings.layerdrop},
            new_head_overrides={"classifier_proj_size": settings.classifier_proj_size,
                                "use_weighted_layer_sum": settings.use_weighted_layer_sum},
        )
        label_maps.append(label_map)
        model.to(device)
        train, validation = rows, None
        if epochs is None:
            train, held_out = validation_rows(data, rows, method=config.split.method,
                                              fraction=settings.validation_fraction, seed=seed, log_prefix=log_prefix)
            validation = (waveforms[held_out], data.targets[held_out])
        history = fine_tune(model, model_extractor, waveforms[train], data.targets[train], settings, seed=seed,
                            validation=validation, epochs=epochs, log_prefix=log_prefix)
        return Wav2Vec2Classifier(model, model_extractor, trim_padding=settings.trim_padding,
                                  batch_size=settings.eval_batch_size, precision=settings.precision), history

    def predict(classifier: Wav2Vec2Classifier, rows: np.ndarray) -> np.ndarray:
        return classifier.predict_proba({WAVEFORM_INPUT: waveforms[rows]})

    return cross_validate_and_save(
        data, report, config, taxonomy=taxonomy, table_config=table_config, output_dir=output_dir,
        fit=fit, predict=predict, bundle_model=lambda classifier: classifier,
        training_facts={
            "pretrained": settings.pretrained,
            "label_map": label_maps[0] if label_maps else {},
            "device": str(device),
            "precision": resolve_precision(settings.precision, device),
        },
    )


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

