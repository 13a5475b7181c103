"""Preprocessed clips made ready for a speech encoder (wav2vec2, HuBERT, WavLM, ...): its inputs and frames.

Spark-free and model-agnostic: the functions take a Hugging Face feature extractor and the
convolutional geometry (``conv_kernel``, ``conv_stride``) of the encoder's config.

1. **Valid part.** A preprocessed clip is its sound padded with exact zeros to ``clip_seconds``
   (:func:`ser_udfs.audio.preprocess.fix_duration`). With ``trim_padding`` the zeros at both ends are
   cut off (keeping at least the encoder's receptive field), so that the model and the
   normalisation see the speech, not the padding.
2. **Feature extractor.** The model's own extractor normalises each clip (zero mean, unit
   variance over its valid part) and pads the batch. Encoders whose extractor asks for an
   attention mask (``return_attention_mask``, e.g. WavLM, wav2vec2-large-lv60) get one and are
   padded to the longest clip of the batch; the others (wav2vec2-base, HuBERT-base) are, as
   their authors intend, given zero padding without a mask, always to the full input width, so
   that a clip's embedding never depends on which clips share its batch.
3. **Frames.** :func:`frame_mask` tells which hidden-state frames come from valid samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ser_udfs.encoders.torch_runtime import to_device
from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch


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
