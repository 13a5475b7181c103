"""Preprocessing of a decoded waveform into a fixed-length 16 kHz clip.

Steps, each a pure function: down-mix → resample (soxr) → peak-normalise → trim leading and
trailing silence → pad or crop to ``clip_seconds``. :func:`to_mono_target_rate` and
:func:`condition_clip` split the chain where waveform augmentation goes in between.

Extraction runs the chain on whole clips; call scoring (:mod:`ser_udfs.calls.stream`) runs the
same steps on a call decoded block by block: :class:`Resampler` is the one resampler of both
(fed in blocks, its output equals the whole-signal output bit for bit), and
:func:`check_finite`, :func:`check_duration` and :func:`check_not_silent` are the checks of both.
"""

from __future__ import annotations

import numpy as np
import soxr

from ser_udfs.errors import ClipError
from ser_udfs.features.config import AudioConfig


def downmix(waveform: np.ndarray) -> np.ndarray:
    """Average the channels.

    Parameters
    ----------
    waveform
        ``[channels, n]`` or ``[n]``.

    Returns
    -------
    float32 ``[n]``.
    """
    if waveform.ndim == 1:
        return waveform.astype(np.float32, copy=False)
    if waveform.shape[0] == 1:
        return waveform[0].astype(np.float32, copy=False)
    return waveform.mean(axis=0, dtype=np.float32)


class Resampler:
    """soxr resampling of one signal of ``channels`` channels, whole or fed block by block.

    Blocks pushed in order, the last with ``last=True``, give (bit for bit) the samples that
    pushing the whole signal at once gives, so a call streamed block by block and a clip
    resampled whole are resampled alike. Computes in float32 at ``quality``.

    Parameters
    ----------
    source_rate_hz, target_rate_hz
        Rates of the input and of the output; equal rates pass blocks through unchanged.
    channels
        Channels of the signal (rows of a ``[channels, n]`` block).
    quality
        soxr quality: ``QQ``, ``LQ``, ``MQ``, ``HQ`` or ``VHQ``.
    """

    def __init__(self, source_rate_hz: int, target_rate_hz: int, *, channels: int = 1, quality: str = "HQ") -> None:
        self.channels = channels
        self._stream = None
        if source_rate_hz != target_rate_hz:
            self._stream = soxr.ResampleStream(source_rate_hz, target_rate_hz, channels, dtype="float32", quality=quality)

    def push(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        """Resample the next block of the signal.

        Parameters
        ----------
        block
            float32 ``[channels, n]``, or ``[n]`` for one channel; ``n`` may be 0.
        last
            True for the signal's last block (it flushes the resampler's delay line).

        Returns
        -------
        float32 ``[channels, m]`` (``[m]`` for a ``[n]`` block): the output that the input so far
        makes final, about ``n * target_rate_hz / source_rate_hz`` samples per block overall.
        """
        if self._stream is None:
            return block
        if block.ndim == 1:
            return self._stream.resample_chunk(np.asarray(block, dtype=np.float32), last=last)
        if block.shape[0] != self.channels:
            raise ValueError(f"block must be [{self.channels}, n], got shape {block.shape}")
        frames = np.ascontiguousarray(block.T, dtype=np.float32)  # soxr takes [n, channels]
        return self._stream.resample_chunk(frames, last=last).T


def resample(waveform: np.ndarray, source_rate_hz: int, target_rate_hz: int, quality: str = "HQ") -> np.ndarray:
    """Resample a whole ``[n]`` signal: one :class:`Resampler` block that is also the last.

    Returns
    -------
    float32 ``[m]``, ``m ≈ n * target_rate_hz / source_rate_hz``; the input itself when the
    rates match.
    """
    return Resampler(source_rate_hz, target_rate_hz, quality=quality).push(waveform, last=True)


def peak_normalise(waveform: np.ndarray, peak_level: float = 0.99) -> np.ndarray:
    """Scale ``[n]`` audio so that its largest absolute sample equals ``peak_level``."""
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    if peak == 0.0:
        return waveform
    return (waveform * np.float32(peak_level / peak)).astype(np.float32, copy=False)


def frame_rms(waveform: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of centred frames, as ``librosa.feature.rms(center=True, pad_mode="constant")``.

    Returns
    -------
    float32 ``[1 + n // hop_length]``.
    """
    padded = np.pad(waveform, frame_length // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    return np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=1))


def trim_silence(
    waveform: np.ndarray, *, top_db: float, frame_length: int, hop_length: int
) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Same rule as ``librosa.effects.trim``: frames whose RMS, in dB relative to the
    maximum frame RMS, is above ``-top_db`` count as sound. Returns ``[m]``, ``m <= n``;
    an all-silent input is returned empty.
    """
    if waveform.size == 0:
        return waveform
    rms = frame_rms(waveform, frame_length, hop_length)
    peak = float(rms.max())
    if peak <= 0.0:
        return waveform[:0]
    threshold = peak * 10.0 ** (-top_db / 20.0)
    loud = np.flatnonzero(rms > threshold)
    start = int(loud[0]) * hop_length
    end = min(waveform.size, (int(loud[-1]) + 1) * hop_length)
    return waveform[start:end]


def fix_duration(waveform: np.ndarray, n_samples: int, align: str = "centre") -> np.ndarray:
    """Pad with zeros or crop ``[m]`` audio to exactly ``[n_samples]``.

    ``align="centre"`` keeps the middle (and centres padding); ``"start"`` keeps the
    beginning (and pads at the end).
    """
    length = waveform.size
    if length == n_samples:
        return waveform
    if length > n_samples:
        offset = (length - n_samples) // 2 if align == "centre" else 0
        return waveform[offset : offset + n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    offset = (n_samples - length) // 2 if align == "centre" else 0
    out[offset : offset + length] = waveform
    return out


def check_finite(samples: np.ndarray) -> None:
    """Refuse samples (any shape) holding NaN or infinity: :class:`ClipError` ``non_finite``."""
    if not np.isfinite(samples).all():
        raise ClipError("non_finite", "the audio holds NaN or infinite samples")


def check_duration(n_samples: int, sample_rate: int, config: AudioConfig) -> None:
    """Refuse a signal of ``n_samples`` shorter than ``config.min_duration_s``: ``too_short``."""
    if n_samples < config.min_duration_s * sample_rate:
        raise ClipError(
            "too_short",
            f"{n_samples / sample_rate:.3f} s of audio, shorter than the {config.min_duration_s} s minimum",
        )


def check_not_silent(samples: np.ndarray, config: AudioConfig) -> None:
    """Refuse ``[n]`` samples that never move away from a constant: :class:`ClipError` ``silent``.

    A signal whose samples span at most ``2 * config.silence_peak`` holds no sound: digital
    silence, or a constant DC offset alone.
    """
    span = float(samples.max() - samples.min()) if samples.size else 0.0
    if span <= 2 * config.silence_peak:
        raise ClipError("silent", f"the clip is silent: its samples span {span:.2e} (digital silence or a constant DC offset)")


def to_mono_target_rate(waveform: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """Check, down-mix and resample a decoded ``[channels, n]`` (or ``[n]``) waveform.

    Raises :class:`ClipError` for non-finite samples, a clip too short to use, or one whose
    samples never move away from a constant (:func:`check_finite`, :func:`check_duration`,
    :func:`check_not_silent`).

    Returns
    -------
    float32 ``[m]`` at ``config.target_sample_rate_hz``.
    """
    mono = downmix(waveform)
    check_finite(mono)
    check_duration(mono.size, sample_rate, config)
    check_not_silent(mono, config)
    return resample(mono, sample_rate, config.target_sample_rate_hz, config.resample_quality)


def condition_clip(waveform: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Normalise, trim and fix the duration of a mono waveform at the target rate.

    Raises :class:`ClipError` (kind ``silent``) when the clip holds no signal above
    ``config.silence_peak``: silent clips are reported, never turned into features.

    Returns
    -------
    float32 ``[config.clip_samples]``.
    """
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    if peak <= config.silence_peak:
        raise ClipError("silent", f"the clip is silent (peak amplitude {peak:.2e})")
    if config.peak_normalise:
        waveform = peak_normalise(waveform, config.peak_level)
    if config.trim_silence:
        waveform = trim_silence(
            waveform,
            top_db=config.trim_top_db,
            frame_length=config.trim_frame_length,
            hop_length=config.trim_hop_length,
        )
    return fix_duration(waveform, config.clip_samples, config.align)


def preprocess(waveform: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """The whole preprocessing chain: ``[channels, n]`` at any rate → ``[clip_samples]`` float32."""
    return condition_clip(to_mono_target_rate(waveform, sample_rate, config), config)
