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

import itertools
from typing import Callable, Iterable

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
    return _scale_to_peak(waveform, float(np.max(np.abs(waveform))) if waveform.size else 0.0, peak_level)


def _scale_to_peak(waveform: np.ndarray, peak: float, peak_level: float) -> np.ndarray:
    """``waveform`` (a whole signal or a block of it) scaled by ``peak_level / peak``, the signal's peak."""
    if peak == 0.0:
        return waveform
    return (waveform * np.float32(peak_level / peak)).astype(np.float32, copy=False)


def frame_rms(waveform: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of centred frames, as ``librosa.feature.rms(center=True, pad_mode="constant")``.

    Returns
    -------
    float32 ``[1 + n // hop_length]``.
    """
    return _padded_frame_rms(np.pad(waveform, frame_length // 2), frame_length, hop_length)


def _padded_frame_rms(padded: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of the frames of ``frame_length`` starting every ``hop_length`` samples of ``padded``
    (each frame's value depends on its own samples only, so pieces of a signal give its values)."""
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
    start, end = _loud_bounds(frame_rms(waveform, frame_length, hop_length), waveform.size, top_db, hop_length)
    return waveform[start:end]


def _loud_bounds(rms: np.ndarray, n_samples: int, top_db: float, hop_length: int) -> tuple[int, int]:
    """``(start, end)`` of the samples :func:`trim_silence` keeps, from the frame RMS of ``n_samples``."""
    peak = float(rms.max())
    if peak <= 0.0:
        return 0, 0
    threshold = peak * 10.0 ** (-top_db / 20.0)
    loud = np.flatnonzero(rms > threshold)
    return int(loud[0]) * hop_length, min(n_samples, (int(loud[-1]) + 1) * hop_length)


def _crop_offset(length: int, n_samples: int, align: str) -> int:
    """Where :func:`fix_duration` starts the ``n_samples`` it keeps of ``length > n_samples``."""
    return (length - n_samples) // 2 if align == "centre" else 0


def fix_duration(waveform: np.ndarray, n_samples: int, align: str = "centre") -> np.ndarray:
    """Pad with zeros or crop ``[m]`` audio to exactly ``[n_samples]``.

    ``align="centre"`` keeps the middle (and centres padding); ``"start"`` keeps the
    beginning (and pads at the end).
    """
    length = waveform.size
    if length == n_samples:
        return waveform
    if length > n_samples:
        offset = _crop_offset(length, n_samples, align)
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


def _refuse_cancelling_channels(waveform: np.ndarray, config: AudioConfig) -> None:
    """For a silent down-mix of a ``[channels, n]`` waveform: refuse it as cancelling channels
    (``silent``, saying so) when one of its channels alone is not silent; else return."""
    if waveform.ndim != 2 or waveform.shape[0] < 2:
        return
    for channel, samples in enumerate(waveform):
        try:
            check_not_silent(samples, config)
        except ClipError:
            continue
        raise ClipError(
            "silent",
            f"the down-mix of the {waveform.shape[0]} channels is silent although channel {channel} is not: "
            "the channels cancel out (one is the other with its polarity inverted); extract a single channel "
            "of the file, or score a single channel (score_calls.py --channels 0)",
        )


def to_mono_target_rate(waveform: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """Check, down-mix and resample a decoded ``[channels, n]`` (or ``[n]``) waveform.

    Raises :class:`ClipError` for non-finite samples, a clip too short to use, or one whose
    samples never move away from a constant (:func:`check_finite`, :func:`check_duration`,
    :func:`check_not_silent`); a silent down-mix of channels that are not silent alone is
    ``silent`` with a message saying that the channels cancel out.

    Returns
    -------
    float32 ``[m]`` at ``config.target_sample_rate_hz``.
    """
    mono = downmix(waveform)
    check_finite(mono)
    check_duration(mono.size, sample_rate, config)
    try:
        check_not_silent(mono, config)
    except ClipError:
        _refuse_cancelling_channels(waveform, config)
        raise
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
    _check_peak(peak, config)
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


def _check_peak(peak: float, config: AudioConfig) -> None:
    """Refuse a clip at the target rate whose peak amplitude is at most ``config.silence_peak``."""
    if peak <= config.silence_peak:
        raise ClipError("silent", f"the clip is silent (peak amplitude {peak:.2e})")


def preprocess(waveform: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """The whole preprocessing chain: ``[channels, n]`` at any rate → ``[clip_samples]`` float32."""
    return condition_clip(to_mono_target_rate(waveform, sample_rate, config), config)


def preprocess_streamed(
    open_blocks: Callable[[], Iterable[np.ndarray]], sample_rate: int, config: AudioConfig
) -> tuple[np.ndarray, int]:
    """:func:`preprocess` of a signal read block by block, three times, in flat memory.

    For long files, of which extraction keeps ``config.clip_seconds``: pass 1 checks the
    samples as :func:`to_mono_target_rate` does and finds the peak at the target rate; pass 2
    computes the frame RMS of the peak-normalised signal, hence what trimming keeps; pass 3 keeps
    the samples that :func:`fix_duration` keeps. Each pass down-mixes and resamples the blocks
    with the one :class:`Resampler`. (Trimming needs the RMS of the normalised signal, which
    needs its peak: two passes could not give the whole-signal path's clip exactly.)

    Parameters
    ----------
    open_blocks
        Returns a new iterable of the signal's consecutive blocks, float32 ``[channels, n_i]``,
        each time it is called (e.g. a fresh decode of the file).
    sample_rate
        Rate of the blocks.
    config
        The audio preprocessing settings.

    Returns
    -------
    clip
        float32 ``[config.clip_samples]``, the clip :func:`preprocess` gives for the whole signal
        (to float32 rounding).
    frames
        Frames read per pass.

    Raises
    ------
    ClipError
        As :func:`preprocess` does, in the same order (the reader's own errors first); ``empty``
        for a signal without samples.
    """
    frames, deferred, peak, length = 0, None, 0.0, 0
    lows, highs = np.inf, -np.inf  # of each channel ([channels] arrays after the first block)
    mono_low, mono_high = np.inf, -np.inf  # of the down-mix
    resampler = Resampler(sample_rate, config.target_sample_rate_hz, quality=config.resample_quality)
    for block in itertools.chain(open_blocks(), [None]):
        if block is None:
            samples = resampler.push(np.zeros(0, dtype=np.float32), last=True)
        else:
            mono = downmix(block)
            frames += mono.size
            try:
                check_finite(mono)
            except ClipError as exc:
                deferred = deferred or exc
            if mono.size:
                lows, highs = np.minimum(lows, block.min(axis=1)), np.maximum(highs, block.max(axis=1))
                mono_low, mono_high = min(mono_low, float(mono.min())), max(mono_high, float(mono.max()))
            samples = resampler.push(mono)
        length += samples.size
        if samples.size and deferred is None:
            peak = max(peak, float(np.max(np.abs(samples))))
    if frames == 0:
        raise ClipError("empty", "the file holds no audio samples")
    if deferred is not None:
        raise deferred
    check_duration(frames, sample_rate, config)
    try:
        check_not_silent(np.array([mono_low, mono_high], dtype=np.float32), config)
    except ClipError:
        _refuse_cancelling_channels(np.stack([lows, highs], axis=1), config)
        raise
    _check_peak(peak, config)
    level = config.peak_level if config.peak_normalise else None
    start, end = 0, length
    if config.trim_silence:
        start, end = _loud_bounds(_streamed_frame_rms(open_blocks, sample_rate, config, peak, level), length,
                                  config.trim_top_db, config.trim_hop_length)
    if end - start > config.clip_samples:
        start += _crop_offset(end - start, config.clip_samples, config.align)
        end = start + config.clip_samples
    kept, position = [], 0
    for samples in _target_rate_blocks(open_blocks, sample_rate, config, peak, level):
        if position < end and position + samples.size > start:
            kept.append(samples[max(0, start - position) : end - position])
        position += samples.size
    clip = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
    return fix_duration(clip, config.clip_samples, config.align), frames


def _target_rate_blocks(
    open_blocks: Callable[[], Iterable[np.ndarray]], sample_rate: int, config: AudioConfig,
    peak: float, peak_level: float | None,
) -> Iterable[np.ndarray]:
    """A fresh read of the signal, down-mixed and resampled block by block, then scaled to
    ``peak_level`` from the signal's ``peak`` (unless ``peak_level`` is None): float32 ``[m_i]`` blocks."""
    resampler = Resampler(sample_rate, config.target_sample_rate_hz, quality=config.resample_quality)
    for block in open_blocks():
        samples = resampler.push(downmix(block))
        yield samples if peak_level is None else _scale_to_peak(samples, peak, peak_level)
    last = resampler.push(np.zeros(0, dtype=np.float32), last=True)
    yield last if peak_level is None else _scale_to_peak(last, peak, peak_level)


def _streamed_frame_rms(
    open_blocks: Callable[[], Iterable[np.ndarray]], sample_rate: int, config: AudioConfig,
    peak: float, peak_level: float | None,
) -> np.ndarray:
    """:func:`frame_rms` of the (normalised) signal at the target rate, computed as it is read."""
    frame_length, hop_length = config.trim_frame_length, config.trim_hop_length
    pending = np.zeros(frame_length // 2, dtype=np.float32)
    parts = []
    for samples in itertools.chain(_target_rate_blocks(open_blocks, sample_rate, config, peak, peak_level), [None]):
        tail = np.zeros(frame_length // 2, dtype=np.float32) if samples is None else samples
        pending = np.concatenate([pending, tail])
        if pending.size < frame_length:
            continue
        count = (pending.size - frame_length) // hop_length + 1
        parts.append(_padded_frame_rms(pending[: (count - 1) * hop_length + frame_length], frame_length, hop_length))
        pending = pending[count * hop_length :]
    return np.concatenate(parts)
