"""Pooled hidden states of a speech encoder (wav2vec2, HuBERT, WavLM, ...) for 16 kHz waveforms.

Spark-free and model-agnostic: the functions take an encoder (a Hugging Face ``AutoModel`` whose
``forward`` accepts ``input_values``, ``attention_mask`` and ``output_hidden_states``) and its
feature extractor, as :mod:`training.hf_audio` loads them. The steps:

1. **Valid part.** A preprocessed clip is its sound padded with exact zeros to ``clip_seconds``
   (:func:`ser_udfs.preprocess.fix_duration`). With ``trim_padding`` the zeros at both ends are
   cut off (keeping at least the encoder's receptive field), so that the model and the
   normalisation see the speech, not the padding.
2. **Feature extractor.** The model's own extractor normalises each clip (zero mean, unit
   variance over its valid part) and pads the batch. Encoders whose extractor asks for an
   attention mask (``return_attention_mask``, e.g. WavLM, wav2vec2-large-lv60) get one and are
   padded to the longest clip of the batch; the others (wav2vec2-base, HuBERT-base) are, as
   their authors intend, given zero padding without a mask, always to the full input width, so
   that a clip's embedding never depends on which clips share its batch.
3. **Pooling.** Mean over the valid frames of each chosen hidden state (``hidden_states[0]`` is
   the transformer's input, ``hidden_states[k]`` the output of layer ``k``), optionally
   combined into one weighted sum of layers.

Torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import numpy as np

from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Columns an embeddings table adds to the features table's row columns (``jobs/extract_embeddings.py``):
#: the flattened pooled vectors, their ``[vectors, hidden]`` shape, the hidden states pooled,
#: the layer weights (empty: one vector per layer) and :func:`embedding_version`.
EMBEDDING_COLUMNS = ("embedding", "embedding_shape", "embedding_layers", "embedding_layer_weights", "embedding_version")

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]


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


@dataclass(frozen=True)
class EncoderBatch:
    """A batch made ready for an encoder.

    Attributes
    ----------
    values
        float32 ``[b, width]``: normalised samples, padded at the end (with ``trim_padding``, each
        clip's valid part first).
    lengths
        int64 ``[b]``: samples per clip before that padding.
    attention_mask
        int64 ``[b, width]`` (1 on valid samples), or ``None`` for encoders that take none.
    """

    values: np.ndarray
    lengths: np.ndarray
    attention_mask: np.ndarray | None

    def tensors(self, device: "torch.device") -> dict[str, "torch.Tensor"]:
        """Keyword arguments of the encoder's ``forward``, on ``device``."""
        inputs = {"input_values": to_device(self.values, device)}
        if self.attention_mask is not None:
            inputs["attention_mask"] = to_device(self.attention_mask, device)
        return inputs


def to_device(array: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """``array`` as a tensor on ``device``; to a GPU through pinned memory, without waiting for it.

    The copy joins the GPU's queue, so the host goes on preparing the next batch while the GPU
    works: the input code and the model overlap.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def resolve_device(choice: str) -> "torch.device":
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is refused."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no GPU; use device 'auto' or 'cpu'")
    if choice not in ("cpu", "cuda"):
        raise UserError(f"unknown device {choice!r}; use auto, cpu or cuda")
    return torch.device(choice)


def resolve_precision(choice: str, device: "torch.device") -> str:
    """``auto`` → ``bf16`` on a GPU that supports it (else ``fp16``), ``fp32`` on the CPU."""
    import torch

    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: "torch.device", precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` (``fp32``: none)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def receptive_field(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Fewest samples that give one frame through the convolutional feature encoder (400 for wav2vec2)."""
    needed = 1
    for kernel, stride in zip(reversed(tuple(conv_kernel)), reversed(tuple(conv_stride))):
        needed = (needed - 1) * stride + kernel
    return needed


def conv_output_lengths(lengths: np.ndarray, conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> np.ndarray:
    """Frames ``[b]`` that the convolutional feature encoder makes of ``lengths`` ``[b]`` samples."""
    frames = np.asarray(lengths, dtype=np.int64)
    for kernel, stride in zip(conv_kernel, conv_stride):
        frames = np.maximum((frames - kernel) // stride + 1, 0)
    return frames


def valid_spans(waveforms: np.ndarray, *, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, stops)`` ``[b]`` of the part of each zero-padded clip of ``[b, n]`` between its
    first and last non-zero sample, widened around its centre to at least ``min_samples``
    (within the clip); an all-zero clip gives its middle ``min_samples``."""
    width = waveforms.shape[1]
    nonzero = waveforms != 0
    has_sound = nonzero.any(axis=1)
    starts = np.where(has_sound, nonzero.argmax(axis=1), width // 2)
    stops = np.where(has_sound, width - nonzero[:, ::-1].argmax(axis=1), width // 2)
    missing = min_samples - (stops - starts)
    short = missing > 0
    widened_starts = np.maximum(0, starts - missing // 2)
    widened_stops = np.minimum(width, widened_starts + min_samples)
    widened_starts = np.maximum(0, widened_stops - min_samples)
    return np.where(short, widened_starts, starts), np.where(short, widened_stops, stops)


def encoder_batch(
    extractor: Any,
    waveforms: np.ndarray,
    *,
    sample_rate_hz: int,
    trim_padding: bool,
    min_samples: int,
) -> EncoderBatch:
    """Run the model's feature extractor on preprocessed clips.

    Parameters
    ----------
    extractor
        A Hugging Face feature extractor of a raw-waveform encoder (``Wav2Vec2FeatureExtractor``).
    waveforms
        float32 ``[b, n]`` preprocessed clips at ``sample_rate_hz``.
    sample_rate_hz
        Rate of ``waveforms``; must be the extractor's ``sampling_rate``.
    trim_padding
        Cut the zero padding at both ends first.
    min_samples
        The encoder's receptive field: shorter valid parts are widened, shorter clips refused.
    """
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim != 2:
        raise UserError(f"waveforms must be a [clips, samples] array, got shape {list(waveforms.shape)}")
    check_sample_rate(extractor, sample_rate_hz)
    width = waveforms.shape[1]
    if width < min_samples:
        raise UserError(
            f"clips of {width} samples are shorter than the encoder's receptive field of {min_samples} samples"
        )
    if trim_padding:
        starts, stops = valid_spans(waveforms, min_samples=min_samples)
        clips = [wave[start:stop] for wave, start, stop in zip(waveforms, starts, stops)]
    else:
        clips = list(waveforms)
    use_mask = bool(getattr(extractor, "return_attention_mask", True))
    processed = extractor(
        clips,
        sampling_rate=sample_rate_hz,
        padding="longest" if use_mask else "max_length",
        max_length=None if use_mask else width,
        return_attention_mask=True,
        return_tensors="np",
    )
    values = np.asarray(processed.get("input_values"), dtype=np.float32)
    if values.ndim != 2 or "attention_mask" not in processed:
        raise UserError(
            f"the feature extractor {type(extractor).__name__} does not turn waveforms into "
            "[clips, samples] input_values; only raw-waveform encoders (wav2vec2, HuBERT, WavLM, "
            "data2vec-audio, UniSpeech, SEW) are supported"
        )
    mask = np.asarray(processed["attention_mask"], dtype=np.int64)
    return EncoderBatch(np.ascontiguousarray(values), mask.sum(axis=1), mask if use_mask else None)


def check_sample_rate(extractor: Any, sample_rate_hz: int) -> None:
    """Refuse audio at another rate than the one the encoder was trained on."""
    expected = getattr(extractor, "sampling_rate", None)
    if expected is not None and int(expected) != int(sample_rate_hz):
        raise UserError(
            f"the encoder expects {expected} Hz audio but the waveforms are at {sample_rate_hz} Hz; "
            f"re-extract the features with --set audio.target_sample_rate_hz={expected}"
        )


def frame_mask(
    lengths: np.ndarray, *, n_frames: int, width: int, conv_kernel: Sequence[int], conv_stride: Sequence[int]
) -> np.ndarray:
    """bool ``[b, n_frames]``: the hidden-state frames that come from valid samples.

    Uses the convolutional geometry when it explains ``n_frames`` for ``width`` samples, else
    (encoders that resample frames) the proportion of valid samples, rounded up.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if conv_kernel and int(conv_output_lengths(np.array([width]), conv_kernel, conv_stride)[0]) == n_frames:
        valid = conv_output_lengths(lengths, conv_kernel, conv_stride)
    else:
        valid = np.ceil(lengths * n_frames / max(width, 1)).astype(np.int64)
    valid = np.clip(valid, 1, n_frames)
    return np.arange(n_frames)[None, :] < valid[:, None]


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
