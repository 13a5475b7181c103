"""Preprocessing of a decoded waveform into a fixed-length 16 kHz clip.

Steps, each a pure function: down-mix → resample (soxr) → peak-normalise → trim leading and
trailing silence → pad or crop to ``clip_seconds``. :func:`to_mono_target_rate` and
:func:`condition_clip` split the chain where waveform augmentation goes in between.
"""

from __future__ import annotations

import numpy as np
import soxr

from ser_udfs.errors import ClipError
from ser_udfs.feature_config import AudioConfig


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


def resample(waveform: np.ndarray, source_rate_hz: int, target_rate_hz: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``[n]`` float32 audio with soxr; returns the input when the rates match."""
    if source_rate_hz == target_rate_hz:
        return waveform
    return soxr.resample(waveform, source_rate_hz, target_rate_hz, quality=quality).astype(np.float32, copy=False)


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


def to_mono_target_rate(waveform: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """Down-mix and resample a decoded ``[channels, n]`` (or ``[n]``) waveform.

    Raises :class:`ClipError` for non-finite samples, a clip too short to use, or one whose
    samples never move away from a constant (digital silence, a DC offset alone).

    Returns
    -------
    float32 ``[m]`` at ``config.target_sample_rate_hz``.
    """
    mono = downmix(waveform)
    if not np.isfinite(mono).all():
        raise ClipError("non_finite", "the audio holds NaN or infinite samples")
    if mono.size < config.min_duration_s * sample_rate:
        raise ClipError(
            "too_short",
            f"{mono.size / sample_rate:.3f} s of audio, shorter than the {config.min_duration_s} s minimum",
        )
    span = float(mono.max() - mono.min())
    if span <= 2 * config.silence_peak:
        raise ClipError("silent", f"the clip is silent: its samples span {span:.2e} (digital silence or a constant DC offset)")
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
