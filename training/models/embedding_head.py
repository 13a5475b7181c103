"""A light head on frozen-encoder embeddings (``--model embed-logreg`` / ``embed-mlp``).

The published SSL benchmark protocol: the encoder stays frozen; each clip becomes the mean over
time of hidden states (:func:`ser_udfs.encoders.pooling.pooled_hidden_states`); a small classifier
learns from those vectors. The head reads either one layer (``head.layer = N``, ``--layer N``)
or a learned softmax-weighted sum of all pooled layers (``head.layer = -1``, as SUPERB does):

    z_l = (x_l - mean_l) / std_l            per layer, training-set statistics
    v   = sum_l softmax(w)_l * z_l          learned layer weights (one layer: v = z)
    logits = linear(v)                      embed-logreg (multinomial logistic regression)
           = linear(dropout(gelu(linear(v))))   embed-mlp

trained with AdamW, weight decay, class-balanced cross-entropy and early stopping on held-out
speakers of the training side. Embeddings come from the features table's ``waveform`` column
(computed here, on the GPU when there is one) or from an embeddings table written by
``jobs/extract_embeddings.py`` on a cluster (then checked against ``--pretrained`` through
``embedding_version``). The bundle holds the encoder too, so it predicts from waveforms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
import torch
from torch import nn

from ser_udfs.encoders.loading import Encoder
from ser_udfs.encoders.pooling import (
    EMBEDDING_COLUMNS,
    EmbeddingConfig,
    embedding_version,
    encoder_fingerprint,
    pooled_hidden_states,
    resolve_layers,
)
from ser_udfs.encoders.torch_runtime import resolve_device, resolve_precision
from ser_udfs.errors import UserError
from ser_udfs.settings import from_dict, to_dict
from training.bundle.format import model_from_state, read_hf_model, write_hf_model
from training.data import WAVEFORM_INPUT, table_waveforms, waveform_input
from training.fitting import EarlyStopping, TrainingHistory, balanced_class_weights
from training.metrics import loss_and_ua
from training.splits import SplitConfig

if TYPE_CHECKING:
    import pandas as pd

    from ser_udfs.features.config import FeatureConfig

logger = logging.getLogger(__name__)

WEIGHTED_LAYERS = -1


@dataclass(frozen=True)
class HeadConfig:
    """The head on the embeddings (``[head]`` in ``conf/embeddings.toml``).

    ``layer``: ``-1`` learns a weighted sum of all pooled layers; ``N >= 0`` reads hidden state
    ``N`` only (0 = transformer input, ``num_hidden_layers`` = last). ``mlp_hidden_units`` is
    used by ``embed-mlp`` only.
    """

    layer: int = WEIGHTED_LAYERS
    mlp_hidden_units: int = 256
    dropout: float = 0.1
    max_epochs: int = 200
    patience: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    class_balanced: bool = True
    validation_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.layer < WEIGHTED_LAYERS:
            raise ValueError("head.layer must be -1 (learned weighted sum of layers) or a layer number >= 0")
        if min(self.max_epochs, self.patience, self.batch_size, self.mlp_hidden_units) < 1:
            raise ValueError("head.max_epochs, patience, batch_size and mlp_hidden_units must be at least 1")
        if not 0 <= self.dropout < 1 or not 0 < self.validation_fraction < 1:
            raise ValueError("head.dropout must lie in [0, 1) and head.validation_fraction in (0, 1)")


@dataclass(frozen=True)
class EmbeddingHeadTrainConfig:
    """Everything the train job decides for ``--model embed-logreg|embed-mlp`` (``conf/embeddings.toml``)."""

    model: Literal["embed-logreg", "embed-mlp"] = "embed-logreg"
    taxonomy: str = "core6"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def model_settings(self) -> dict[str, Any]:
        """Embedding and head settings, as a dict."""
        return {"embedding": to_dict(self.embedding), "head": to_dict(self.head)}


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which pooled vectors a head reads: ``pooled_hidden_states(layers=..., layer_weights=...)``."""

    layers: tuple[int, ...]
    layer_weights: tuple[float, ...]
    trim_padding: bool

    @property
    def n_vectors(self) -> int:
        """Pooled vectors per clip: one per layer, or one weighted sum."""
        return 1 if self.layer_weights else len(self.layers)


@dataclass(frozen=True)
class HeadArchitecture:
    """What rebuilds an :class:`EmbeddingHead` around its weights (stored in ``config.json``)."""

    n_layers: int
    hidden_size: int
    n_classes: int
    hidden_units: int
    dropout: float


class EmbeddingHead(nn.Module):
    """Per-layer standardisation, softmax layer weights, then linear (or one hidden layer) → logits.

    Input ``[b, n_layers, hidden_size]`` pooled embeddings; output ``[b, n_classes]`` logits.
    """

    def __init__(self, architecture: HeadArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        shape = (architecture.n_layers, architecture.hidden_size)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.layer_logits = nn.Parameter(torch.zeros(architecture.n_layers))
        self.dropout = nn.Dropout(architecture.dropout)
        if architecture.hidden_units:
            self.classifier: nn.Module = nn.Sequential(
                nn.Linear(architecture.hidden_size, architecture.hidden_units),
                nn.GELU(),
                nn.Dropout(architecture.dropout),
                nn.Linear(architecture.hidden_units, architecture.n_classes),
            )
        else:
            self.classifier = nn.Linear(architecture.hidden_size, architecture.n_classes)

    def layer_weights(self) -> torch.Tensor:
        """Softmax weights ``[n_layers]`` of the pooled layers."""
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, n_classes]`` for pooled embeddings ``[b, n_layers, hidden_size]``."""
        standardised = (pooled - self.mean) / self.std
        combined = (standardised * self.layer_weights()[None, :, None]).sum(dim=1)
        return self.classifier(self.dropout(combined))


def head_probabilities(head: EmbeddingHead, pooled: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities float32 ``[n, n_classes]`` for pooled embeddings ``[n, n_layers, hidden]``."""
    head.eval()
    outputs = [np.zeros((0, head.architecture.n_classes), dtype=np.float32)]
    with torch.inference_mode():
        for start in range(0, len(pooled), batch_size):
            logits = head(torch.from_numpy(np.ascontiguousarray(pooled[start : start + batch_size], dtype=np.float32)))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs)


def fit_head(
    pooled: np.ndarray,
    labels: np.ndarray,
    config: HeadConfig,
    *,
    architecture: HeadArchitecture,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
    log_prefix: str = "",
) -> tuple[EmbeddingHead, TrainingHistory]:
    """Train a head on pooled embeddings ``[n, n_layers, hidden]`` and class indices ``[n]`` (CPU).

    With ``validation`` (``(pooled [m, ...], labels [m])`` of held-out speakers) training stops
    early and the best epoch's weights are kept; otherwise it runs ``epochs`` (default
    ``config.max_epochs``) epochs.
    """
    torch.manual_seed(seed)
    head = EmbeddingHead(architecture)
    features = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
    head.mean.copy_(features.mean(dim=0))
    head.std.copy_(features.std(dim=0) + 1e-5)
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    weights = balanced_class_weights(labels, architecture.n_classes) if config.class_balanced else None
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    n_epochs = config.max_epochs if validation is not None else (epochs or config.max_epochs)
    history = TrainingHistory()
    stopping = EarlyStopping(history, config.patience) if validation is not None else None
    started = time.perf_counter()
    for epoch in range(1, n_epochs + 1):
        history.train_loss.append(_head_epoch(head, optimizer, features, targets, weights, config, seed=seed, epoch=epoch))
        history.learning_rate.append(config.learning_rate)
        if stopping is None:
            history.best_epoch = epoch
            continue
        assert validation is not None
        stopping.record(epoch, *loss_and_ua(head_probabilities(head, validation[0]), validation[1]), head.state_dict)
        if stopping.should_stop(epoch):
            break
    if stopping is not None and stopping.best_state is not None:
        head.load_state_dict(stopping.best_state)
    history.seconds = time.perf_counter() - started
    weights = head.layer_weights().detach().numpy()
    logger.info("%shead trained for %d epochs in %.1f s (best epoch %d%s)%s", log_prefix, len(history.train_loss),
                history.seconds, history.best_epoch,
                f", validation UA {history.validation_ua[history.best_epoch - 1]:.3f}" if validation is not None else "",
                f"; layer weights {[round(float(w), 3) for w in weights]}" if len(weights) > 1 else "")
    return head.eval(), history


def _head_epoch(head: EmbeddingHead, optimizer: Any, features: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor | None, config: HeadConfig, *, seed: int, epoch: int) -> float:
    """Train ``head`` one epoch (1-based ``epoch``) on pooled ``features`` ``[n, layers, hidden]``; mean loss."""
    head.train()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    total = 0.0
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        loss = nn.functional.cross_entropy(head(features[index]), targets[index], weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
    return total / max(1, len(targets))


class EmbeddingClassifier:
    """A frozen encoder, its extractor and a trained head: the predictor of an ``embed-*`` bundle."""

    inputs = (WAVEFORM_INPUT,)

    def __init__(self, encoder: Any, extractor: Any, head: EmbeddingHead, spec: EmbeddingSpec, *, kind: str,
                 batch_size: int = 8, precision: str = "auto") -> None:
        self.encoder = encoder
        self.extractor = extractor
        self.head = head
        self.spec = spec
        self.kind = kind
        self.batch_size = batch_size
        self.precision = precision

    @property
    def n_classes(self) -> int:
        """Number of outputs."""
        return self.head.architecture.n_classes

    def predict_proba(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class probabilities float32 ``[n, n_classes]`` for ``batch["waveform"]`` ``[n, samples]``."""
        device = next(self.encoder.parameters()).device
        pooled = pooled_hidden_states(
            self.encoder, self.extractor, waveform_input(batch),
            sample_rate_hz=self.extractor.sampling_rate, layers=self.spec.layers,
            layer_weights=self.spec.layer_weights, trim_padding=self.spec.trim_padding,
            batch_size=self.batch_size, precision=resolve_precision(self.precision, device),
        )
        return head_probabilities(self.head, pooled)

    def save_weights(self, path: Path) -> dict[str, Any]:
        """Write ``model.safetensors`` (``encoder.*``, ``head.*``) and ``encoder/``; return ``config.json`` entries."""
        tensors = {f"encoder.{name}": tensor for name, tensor in self.encoder.state_dict().items()}
        tensors.update({f"head.{name}": tensor for name, tensor in self.head.state_dict().items()})
        hf_entries = write_hf_model(path, tensors, self.encoder.config, self.extractor)
        return {
            "model_kind": self.kind,
            "inputs": list(self.inputs),
            "architecture": {
                **hf_entries,
                "embedding": to_dict(self.spec),
                "head": to_dict(self.head.architecture),
                "batch_size": self.batch_size,
            },
        }

    @classmethod
    def from_bundle(cls, files: Mapping[str, bytes], config: Mapping[str, Any], *, where: str) -> "EmbeddingClassifier":
        """Rebuild from a bundle's files by name and its parsed ``config.json`` (weights checked).

        ``where`` names the bundle in messages.
        """
        from transformers import AutoModel

        architecture, hf_config, extractor, tensors = read_hf_model(files, config, where=where)
        try:
            spec = from_dict(EmbeddingSpec, architecture.get("embedding") or {}, where="embedding")
            head_architecture = from_dict(HeadArchitecture, architecture.get("head") or {}, where="head")
        except UserError as exc:
            raise UserError(f"model bundle {where}: bad architecture in config.json ({exc})") from None
        parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "head": {}}
        for name, tensor in tensors.items():
            prefix, _, rest = name.partition(".")
            parts.setdefault(prefix, {})[rest] = tensor
        if set(parts) != {"encoder", "head"}:
            raise UserError(f"model bundle {where}: unexpected tensors {sorted(set(parts) - {'encoder', 'head'})}")
        encoder = model_from_state(lambda: AutoModel.from_config(hf_config), parts["encoder"], where=where)
        head = model_from_state(lambda: EmbeddingHead(head_architecture), parts["head"], where=where)
        if head_architecture.n_layers != spec.n_vectors:
            raise UserError(f"model bundle {where}: the head reads {head_architecture.n_layers} vectors, "
                            f"the embedding gives {spec.n_vectors}")
        encoder.to(resolve_device("auto"))
        return cls(encoder, extractor, head.to("cpu"), spec, kind=str(config.get("model_kind")),
                   batch_size=int(architecture.get("batch_size", 8)))


def training_embeddings(
    frame: "pd.DataFrame", encoder: Encoder, config: EmbeddingHeadTrainConfig, table_config: "FeatureConfig",
    device: torch.device,
) -> tuple[np.ndarray, EmbeddingSpec, dict[str, Any]]:
    """Pooled embeddings ``[n, vectors, hidden]`` of features rows, what they are, and facts for the bundle.

    An embeddings table (an ``embedding`` column, from ``jobs/extract_embeddings.py``) is checked
    against ``encoder`` and used; otherwise the rows' waveforms are embedded here on ``device``.
    """
    if "embedding" in frame.columns:
        return _table_embeddings(frame, encoder, config, table_config)
    return _computed_embeddings(frame, encoder, config, table_config, device)


def _spec_for(config: EmbeddingHeadTrainConfig, n_states: int) -> EmbeddingSpec:
    if config.head.layer != WEIGHTED_LAYERS:
        layers = resolve_layers([config.head.layer], n_states)
        return EmbeddingSpec(layers, (), config.embedding.trim_padding)
    layers = resolve_layers(config.embedding.layers, n_states)
    return EmbeddingSpec(layers, tuple(config.embedding.layer_weights), config.embedding.trim_padding)


def _computed_embeddings(
    frame: "pd.DataFrame", encoder: Encoder, config: EmbeddingHeadTrainConfig, table_config: "FeatureConfig",
    device: torch.device,
) -> tuple[np.ndarray, EmbeddingSpec, dict[str, Any]]:
    waveforms = table_waveforms(frame, table_config, encoder.extractor)
    spec = _spec_for(config, encoder.model.config.num_hidden_layers + 1)
    precision = resolve_precision(config.embedding.precision, device)
    started = time.perf_counter()
    pooled = pooled_hidden_states(
        encoder.model, encoder.extractor, waveforms, sample_rate_hz=table_config.audio.target_sample_rate_hz,
        layers=spec.layers, layer_weights=spec.layer_weights, trim_padding=spec.trim_padding,
        batch_size=config.embedding.batch_size, precision=precision,
    )
    seconds = time.perf_counter() - started
    logger.info("embedded %d clips with %s on %s (%s) in %.1f s: %.1f clips/s", len(pooled),
                encoder.source.name_or_path, device, precision, seconds, len(pooled) / max(seconds, 1e-9))
    return pooled, spec, {**to_dict(spec), "source": "computed from the waveform column", "device": str(device),
                          "precision": precision, "clips_per_s": len(pooled) / max(seconds, 1e-9)}


def _table_embeddings(
    frame: "pd.DataFrame", encoder: Encoder, config: EmbeddingHeadTrainConfig, table_config: "FeatureConfig"
) -> tuple[np.ndarray, EmbeddingSpec, dict[str, Any]]:
    """Pooled embeddings of an embeddings table, checked against the encoder; the head's layer picked."""
    missing = [name for name in EMBEDDING_COLUMNS if name not in frame.columns]
    if missing:
        raise UserError(f"the embeddings table lacks column(s) {missing}; rerun jobs/extract_embeddings.py")
    versions = sorted(set(frame["embedding_version"].astype(str)))
    if len(versions) != 1:
        raise UserError(f"the embeddings table mixes embedding versions {versions}; extract it again in one run")
    first = frame.iloc[0]
    stored_layers = tuple(int(v) for v in first["embedding_layers"])
    stored_weights = tuple(float(v) for v in first["embedding_layer_weights"])
    expected = embedding_version(
        encoder_fingerprint(encoder.model), layers=stored_layers, layer_weights=stored_weights,
        trim_padding=config.embedding.trim_padding, sample_rate_hz=table_config.audio.target_sample_rate_hz,
    )
    if versions[0] != expected:
        raise UserError(
            f"the embeddings table has embedding version {versions[0]}, but --pretrained "
            f"{config.embedding.pretrained} with trim_padding={config.embedding.trim_padding} gives {expected}: "
            "it was computed with another encoder or settings; pass the same --pretrained (and settings) as for "
            "jobs/extract_embeddings.py"
        )
    shape = tuple(int(v) for v in first["embedding_shape"])
    stacked = np.stack([np.asarray(value, dtype=np.float32) for value in frame["embedding"]])
    pooled = stacked.reshape(len(frame), *shape)
    spec = EmbeddingSpec(stored_layers, stored_weights, config.embedding.trim_padding)
    if config.head.layer != WEIGHTED_LAYERS:
        if stored_weights or config.head.layer not in stored_layers:
            raise UserError(
                f"--layer {config.head.layer} is not among the table's separately stored layers "
                f"{list(stored_layers) if not stored_weights else '(a weighted sum)'}; extract it with "
                f"--set embedding.layers=[{config.head.layer}] or drop --layer"
            )
        position = stored_layers.index(config.head.layer)
        pooled = pooled[:, position : position + 1]
        spec = EmbeddingSpec((config.head.layer,), (), config.embedding.trim_padding)
    logger.info("using %d embeddings of shape %s from the table (version %s)", len(pooled), list(pooled.shape[1:]),
                versions[0])
    return np.ascontiguousarray(pooled), spec, {**to_dict(spec), "source": "embeddings table",
                                                 "embedding_version": versions[0]}
