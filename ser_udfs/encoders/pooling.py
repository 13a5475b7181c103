"""Pooled hidden states of a speech encoder for 16 kHz waveforms, and what names them.

Spark-free and model-agnostic: the functions take an encoder (a Hugging Face ``AutoModel`` whose
``forward`` accepts ``input_values``, ``attention_mask`` and ``output_hidden_states``) and its
feature extractor, as :mod:`ser_udfs.encoders.loading` loads them. Clips go through the
extractor as :mod:`ser_udfs.encoders.inputs` describes; each chosen hidden state
(``hidden_states[0]`` is the transformer's input, ``hidden_states[k]`` the output of layer ``k``)
is averaged over the valid frames of each clip, and optionally combined into one weighted sum of
layers. :class:`EmbeddingConfig` holds these choices, :func:`embedding_version` names them.

Torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ser_udfs.encoders.inputs import check_sample_rate, encoder_batch, frame_mask, receptive_field
from ser_udfs.encoders.loading import load_encoder
from ser_udfs.encoders.torch_runtime import DeviceChoice, Precision, autocast, resolve_device, resolve_precision, to_device
from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Columns an embeddings table adds to the features table's row columns (``jobs/extract_embeddings.py``):
#: the flattened pooled vectors, their ``[vectors, hidden]`` shape, the hidden states pooled,
#: the layer weights (empty: one vector per layer) and :func:`embedding_version`.
EMBEDDING_COLUMNS = ("embedding", "embedding_shape", "embedding_layers", "embedding_layer_weights", "embedding_version")

#: What :func:`embedder_factory` builds: float32 ``[b, samples]`` waveforms → ``[b, vectors, hidden]``.
EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EmbeddingConfig:
    """How clips become embeddings (``[embedding]`` in ``conf/embeddings.toml``).

    Attributes
    ----------
    pretrained
        Local directory of a Hugging Face audio encoder (or a hub id where a hub is reachable);
        ``--pretrained`` overrides it.
    layers
        Hidden states to pool (0 = transformer input, ``k`` = output of layer ``k``, negative
        counts from the end); empty = all of them.
    layer_weights
        Empty: keep one pooled vector per layer (``[n_layers, hidden]`` per clip). Otherwise one
        weight per entry of ``layers``: the clip gets their weighted sum (``[1, hidden]``);
        weights are normalised to sum to 1.
    trim_padding
        Cut the zero padding of preprocessed clips before the extractor (see module docstring).
    batch_size
        Clips per forward pass.
    device, precision
        ``auto`` picks the GPU when there is one, and bf16 (or fp16) autocast on it.
    torch_threads
        ``torch.set_num_threads`` in each Spark Python worker (0 leaves torch's default).
    rows_per_partition
        The embeddings job splits the table into partitions of about this many clips.
    """

    pretrained: str = ""
    layers: tuple[int, ...] = ()
    layer_weights: tuple[float, ...] = ()
    trim_padding: bool = True
    batch_size: int = 8
    device: DeviceChoice = "auto"
    precision: Precision = "auto"
    torch_threads: int = 1
    rows_per_partition: int = 256

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.rows_per_partition < 1 or self.torch_threads < 0:
            raise ValueError("embedding.batch_size and rows_per_partition must be >= 1, torch_threads >= 0")
        if self.layer_weights and len(self.layer_weights) != len(self.layers):
            raise ValueError("embedding.layer_weights needs one weight per entry of embedding.layers")
        if self.layer_weights and (min(self.layer_weights) < 0 or sum(self.layer_weights) <= 0):
            raise ValueError("embedding.layer_weights must be non-negative with a positive sum")


def resolve_layers(layers: Sequence[int], n_hidden_states: int) -> tuple[int, ...]:
    """Layer indices in ``0 .. n_hidden_states - 1`` (negative ones counted from the end; empty = all)."""
    if not layers:
        return tuple(range(n_hidden_states))
    resolved = []
    for layer in layers:
        index = layer + n_hidden_states if layer < 0 else layer
        if not 0 <= index < n_hidden_states:
            raise UserError(
                f"layer {layer} does not exist: the encoder has hidden states 0..{n_hidden_states - 1} "
                f"(0 = transformer input, {n_hidden_states - 1} = last layer)"
            )
        resolved.append(index)
    return tuple(resolved)


def pooled_hidden_states(
    model: Any,
    extractor: Any,
    waveforms: np.ndarray,
    *,
    sample_rate_hz: int,
    layers: Sequence[int] = (),
    layer_weights: Sequence[float] = (),
    trim_padding: bool = True,
    batch_size: int = 8,
    precision: str = "fp32",
) -> np.ndarray:
    """Mean-over-time hidden states of ``model`` for a batch of clips.

    Parameters
    ----------
    model
        A Hugging Face audio encoder (``AutoModel``), on the device it should run on.
    extractor
        Its feature extractor.
    waveforms
        float32 ``[n, samples]`` preprocessed clips at ``sample_rate_hz``.
    layers
        Hidden states to pool (see :func:`resolve_layers`); empty = all.
    layer_weights
        Empty, or one weight per layer: return their weighted sum (normalised weights).
    trim_padding, batch_size
        See :class:`EmbeddingConfig`.
    precision
        ``fp32``, ``bf16`` or ``fp16`` (autocast); pooling is done in float32.

    Returns
    -------
    np.ndarray
        float32 ``[n, len(layers), hidden]``, or ``[n, 1, hidden]`` with ``layer_weights``.
    """
    import torch

    config = model.config
    n_states = int(config.num_hidden_layers) + 1
    chosen = resolve_layers(layers, n_states)
    weights = _normalised_weights(layer_weights, len(chosen))
    kernel, stride = tuple(getattr(config, "conv_kernel", ())), tuple(getattr(config, "conv_stride", ()))
    min_samples = receptive_field(kernel, stride) if kernel else 1
    device = next(model.parameters()).device
    waveforms = np.asarray(waveforms, dtype=np.float32)
    n_out = 1 if weights is not None else len(chosen)
    # Results land in (pinned) host memory without waiting: the GPU is waited for once, at the end.
    pooled = torch.empty((len(waveforms), n_out, int(config.hidden_size)), dtype=torch.float32,
                         pin_memory=device.type == "cuda")
    layer_weights_on_device = to_device(weights, device) if weights is not None else None
    model.eval()
    for start, batch in _batches(waveforms, batch_size):
        inputs = encoder_batch(extractor, batch, sample_rate_hz=sample_rate_hz, trim_padding=trim_padding,
                               min_samples=min_samples)
        with torch.inference_mode():
            with autocast(device, precision):
                hidden_states = model(**inputs.tensors(device), output_hidden_states=True).hidden_states
            stacked = torch.stack([hidden_states[index] for index in chosen], dim=1).float()  # [b, L, T, H]
            mask = frame_mask(inputs.lengths, n_frames=stacked.shape[2], width=inputs.values.shape[1],
                              conv_kernel=kernel, conv_stride=stride)
            means = masked_mean(stacked, to_device(mask, device))  # [b, L, H]
            if layer_weights_on_device is not None:
                means = (means * layer_weights_on_device[None, :, None]).sum(dim=1, keepdim=True)
            pooled[start : start + len(batch)].copy_(means, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return pooled.numpy()


@dataclass(frozen=True)
class EmbeddingPlan:
    """What the driver decides before any worker embeds a clip (:func:`plan_embeddings`).

    Attributes
    ----------
    config
        The embedding config with ``layers`` resolved (non-negative indices).
    sample_rate_hz
        Rate of the waveforms.
    version
        :func:`embedding_version` of the encoder and these choices.
    shape
        ``(vectors, hidden)`` of each clip's embedding.
    encoder
        Facts about the encoder for the manifest (type, sizes, fingerprint, feature extractor).
    """

    config: EmbeddingConfig
    sample_rate_hz: int
    version: str
    shape: tuple[int, int]
    encoder: dict[str, Any]

    @property
    def model_id(self) -> str:
        """Id of what :func:`embedder_factory` builds for this plan (the worker cache's key)."""
        config = self.config
        return f"{self.version}-{config.device}-{config.precision}-b{config.batch_size}-t{config.torch_threads}"

    def factory(self) -> Callable[[], EmbedFn]:
        """:func:`embedder_factory` of this plan."""
        return embedder_factory(self.config, sample_rate_hz=self.sample_rate_hz)


def plan_embeddings(config: EmbeddingConfig, *, sample_rate_hz: int) -> EmbeddingPlan:
    """Load the encoder once on the CPU to check and resolve ``config`` for waveforms at ``sample_rate_hz``.

    Raises
    ------
    UserError
        When the encoder cannot be loaded, expects another sample rate or lacks a chosen layer.
    """
    encoder = load_encoder(config.pretrained, device="cpu")
    check_sample_rate(encoder.extractor, sample_rate_hz)
    model_config = encoder.model.config
    layers = resolve_layers(config.layers, int(model_config.num_hidden_layers) + 1)
    config = replace(config, layers=layers)
    fingerprint = encoder_fingerprint(encoder.model)
    version = embedding_version(fingerprint, layers=layers, layer_weights=config.layer_weights,
                                trim_padding=config.trim_padding, sample_rate_hz=sample_rate_hz)
    facts = {
        "pretrained": config.pretrained,
        "model_type": model_config.model_type,
        "num_hidden_layers": int(model_config.num_hidden_layers),
        "hidden_size": int(model_config.hidden_size),
        "fingerprint": fingerprint,
        "feature_extractor": encoder.extractor.to_dict(),
    }
    shape = (1 if config.layer_weights else len(layers), int(model_config.hidden_size))
    return EmbeddingPlan(config, sample_rate_hz, version, shape, facts)


def embedder_factory(config: EmbeddingConfig, *, sample_rate_hz: int) -> Callable[[], EmbedFn]:
    """A zero-argument factory, made on the driver, of the function that embeds waveforms.

    The Spark layer calls it once per Python worker (:func:`ser_udfs.spark.model_cache.cached_model`):
    it sets ``torch.set_num_threads(config.torch_threads)`` (when positive), loads the encoder
    ``config.pretrained`` on ``config.device`` and returns ``embed(waveforms)``: float32
    ``[b, samples]`` clips at ``sample_rate_hz`` → float32 ``[b, vectors, hidden]`` pooled hidden
    states (:func:`pooled_hidden_states` with the config's layers, weights, padding, batch size
    and precision).

    Parameters
    ----------
    config
        With ``layers`` resolved (non-negative), as :func:`resolve_layers` gives them.
    sample_rate_hz
        Rate of the waveforms the function will get.
    """

    def load() -> EmbedFn:
        import torch

        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        encoder = load_encoder(config.pretrained, device=resolve_device(config.device))
        precision = resolve_precision(config.precision, next(encoder.model.parameters()).device)

        def embed(waveforms: np.ndarray) -> np.ndarray:
            return pooled_hidden_states(
                encoder.model, encoder.extractor, waveforms, sample_rate_hz=sample_rate_hz, layers=config.layers,
                layer_weights=config.layer_weights, trim_padding=config.trim_padding,
                batch_size=config.batch_size, precision=precision,
            )

        return embed

    return load


def masked_mean(hidden: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """Mean over the time axis of ``hidden`` ``[b, L, T, H]`` where ``mask`` ``[b, T]`` is true → ``[b, L, H]``."""
    weights = mask.to(hidden.dtype)[:, None, :, None]
    return (hidden * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)


def encoder_fingerprint(model: Any) -> str:
    """First 12 hex characters of the SHA-1 over the names, dtypes, shapes and bytes of the weights."""
    import torch

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{list(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def embedding_version(
    fingerprint: str, *, layers: Sequence[int], layer_weights: Sequence[float], trim_padding: bool, sample_rate_hz: int
) -> str:
    """Names what decides an embedding's numbers (encoder weights, layers, weights, padding, rate)."""
    canonical = json.dumps(
        {
            "encoder": fingerprint,
            "layers": [int(layer) for layer in layers],
            "layer_weights": [float(weight) for weight in layer_weights],
            "trim_padding": bool(trim_padding),
            "sample_rate_hz": int(sample_rate_hz),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def _normalised_weights(layer_weights: Sequence[float], n_layers: int) -> np.ndarray | None:
    if not layer_weights:
        return None
    weights = np.asarray(layer_weights, dtype=np.float32)
    if weights.shape != (n_layers,) or (weights < 0).any() or weights.sum() <= 0:
        raise UserError(f"layer_weights must be {n_layers} non-negative numbers with a positive sum")
    return weights / weights.sum()


def _batches(waveforms: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(waveforms), batch_size):
        yield start, waveforms[start : start + batch_size]
