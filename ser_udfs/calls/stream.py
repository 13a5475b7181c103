"""Scoring one recorded call: an emotion timeline per channel and a summary per call.

Pure NumPy, no Spark (the Spark wrapper is :mod:`ser_udfs.spark.score`). For each call:

1. decode the file in blocks of ``stream.block_s`` (:func:`ser_udfs.audio.decode.stream_audio_blocks`);
   never the whole file, so memory stays flat however long the call;
2. check each block as extraction checks a clip (:func:`ser_udfs.audio.preprocess.check_finite`,
   then :func:`~ser_udfs.audio.preprocess.check_duration` on the whole call), keep the chosen
   channels (each one scored on its own) or their average (``"mix"``), and resample them to
   the model's rate with extraction's resampler (:class:`ser_udfs.audio.preprocess.Resampler`,
   fed block by block: the same samples as resampling the whole signal);
3. detect speech per channel (:class:`ser_udfs.audio.vad.SpeechDetector`);
4. cut windows of the model's clip length on a grid of ``window.hop_s`` from the start of the
   call; a window with at least ``window.min_speech_s`` of speech is scored, others are not;
5. each scored window goes through extraction's steps (:func:`predict_windows`): the silent
   check, :func:`~ser_udfs.audio.preprocess.condition_clip` and
   :func:`ser_udfs.features.compute.compute_features_batch` with the model's feature config, in
   batches, then the model's ``predict_proba``;
6. per channel: optional moving average of the window probabilities over neighbouring windows,
   then a timeline of non-overlapping segments (:func:`channel_segments`) and the call summary
   (:func:`summarise_call`).

Timeline rule: inside speech, time is cut at the speech region edges and at the hop grid; each
piece takes the mean probabilities of the scored windows overlapping it and their most probable
label; consecutive pieces with the same speech flag and label are merged (probabilities weighted
by duration). Speech that no scored window covers (a lone short burst) has no label. A piece
whose top probability is under ``summary.min_confidence`` is labelled ``uncertain``
(:data:`UNCERTAIN_LABEL`; its probabilities are kept); uncertain speech counts in no emotion's
share: the summary reports its seconds (``uncertain_s``) instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterator, Literal, Protocol, Sequence

import numpy as np

from ser_udfs.audio.decode import AudioInfo, AudioSource, read_info, stream_audio_blocks
from ser_udfs.audio.preprocess import Resampler, check_duration, check_finite, check_not_silent, condition_clip, downmix
from ser_udfs.audio.vad import SpeechDetector, VadConfig
from ser_udfs.errors import ClipError, UserError
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.features.config import AudioConfig, FeatureConfig

ChannelChoice = Literal["all", "mix"] | tuple[int, ...]
#: The label of timeline pieces whose top probability is under ``summary.min_confidence``.
UNCERTAIN_LABEL = "uncertain"


class Predictor(Protocol):
    """What scoring needs from a model (a loaded model bundle is one).

    ``predict_proba`` takes the arrays :func:`window_batch` makes and returns float32
    ``[batch, len(labels)]``.
    """

    @property
    def labels(self) -> tuple[str, ...]: ...

    feature_config: FeatureConfig

    def predict_proba(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class WindowConfig:
    """``[window]``: where windows are cut. ``window_s = 0`` means the model's clip length."""

    window_s: float = 0.0
    hop_s: float = 1.5
    min_speech_s: float = 0.5


@dataclass(frozen=True)
class SmoothingConfig:
    """``[smoothing]``: centred moving average over this many neighbouring windows (1 = off)."""

    windows: int = 3

    def __post_init__(self) -> None:
        if self.windows < 1 or self.windows % 2 == 0:
            raise ValueError("smoothing.windows must be an odd number >= 1 (1 turns smoothing off)")


@dataclass(frozen=True)
class SummaryConfig:
    """``[summary]``: which labels count as negative, how stretches of them are reported, and
    the top probability under which a piece of the timeline is labelled ``uncertain`` (0: off)."""

    negative_labels: tuple[str, ...] = ("angry", "disgust", "fear", "sad")
    top_stretches: int = 3
    stretch_gap_s: float = 2.0
    min_stretch_s: float = 2.0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("summary.min_confidence must lie in [0, 1] (0 turns it off)")


@dataclass(frozen=True)
class StreamConfig:
    """``[stream]``: decode block length and how many windows go through the model at once."""

    block_s: float = 30.0
    batch_windows: int = 32

    def __post_init__(self) -> None:
        if self.block_s <= 0 or self.batch_windows < 1:
            raise ValueError("stream.block_s must be positive and stream.batch_windows at least 1")


@dataclass(frozen=True)
class CallScoringConfig:
    """Everything that decides the numbers of a call's timeline, besides the model."""

    window: WindowConfig = field(default_factory=WindowConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass(frozen=True)
class WindowGeometry:
    """Windows in samples at the model's rate."""

    sample_rate: int
    window_samples: int
    hop_samples: int
    min_speech_samples: int


def window_geometry(feature_config: FeatureConfig, window: WindowConfig) -> WindowGeometry:
    """Check that the model's feature config can be honoured with ``window``, in samples.

    Raises
    ------
    UserError
        When the window length differs from the model's training clip length, the hop is not in
        ``(0, window]``, or the model's sample rate is not usable.
    """
    audio = feature_config.audio
    rate = audio.target_sample_rate_hz
    if not 4000 <= rate <= 384_000:
        raise UserError(f"the model's feature config asks for a {rate} Hz sample rate, which scoring cannot produce")
    if feature_config.mel.fmax_hz > rate / 2:
        raise UserError(
            f"the model's feature config asks for mel bands up to {feature_config.mel.fmax_hz} Hz at a "
            f"{rate} Hz sample rate (above Nyquist); the bundle cannot be scored"
        )
    window_s = window.window_s or audio.clip_seconds
    if abs(window_s - audio.clip_seconds) * rate >= 1:
        raise UserError(
            f"window length {window_s} s does not match the model's {audio.clip_seconds} s training clips; "
            f"leave --window-s out or pass {audio.clip_seconds}"
        )
    if not 0 < window.hop_s <= window_s:
        raise UserError(f"hop {window.hop_s} s must be positive and at most the {window_s} s window")
    if window.min_speech_s < 0:
        raise UserError("window.min_speech_s must not be negative")
    return WindowGeometry(
        sample_rate=rate,
        window_samples=audio.clip_samples,
        hop_samples=max(1, int(round(window.hop_s * rate))),
        min_speech_samples=int(round(window.min_speech_s * rate)),
    )


def parse_channels(text: str, *, customer_channel: int) -> ChannelChoice:
    """``all``, ``mix``, ``customer`` (the configured customer channel) or indices ``0``, ``1``, ``0,1``."""
    value = text.strip().lower()
    if value in ("all", "mix"):
        return value  # type: ignore[return-value]
    if value == "customer":
        return (customer_channel,)
    try:
        indices = tuple(sorted({int(part) for part in value.split(",")}))
    except ValueError:
        raise UserError(f"--channels {text!r}: use all, mix, customer, or channel numbers such as 1 or 0,1") from None
    if any(index < 0 for index in indices):
        raise UserError(f"--channels {text!r}: channel numbers start at 0")
    return indices


def channel_plan(choice: ChannelChoice, n_channels: int) -> list[tuple[str, tuple[int, ...]]]:
    """Scored channels of a file: ``(name, source channel indices)``; ``mix`` averages them all.

    Raises :class:`ClipError` (``unsupported``) when the file lacks a requested channel.
    """
    if choice == "all":
        return [(str(index), (index,)) for index in range(n_channels)]
    if choice == "mix":
        return [("mix", tuple(range(n_channels)))]
    missing = [index for index in choice if index >= n_channels]
    if missing:
        raise ClipError(
            "unsupported",
            f"channel(s) {missing} requested but the file has {n_channels} channel(s); "
            "a mono recording has no separate customer channel",
        )
    return [(str(index), (index,)) for index in choice]


def window_batch(clips: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """What a model is fed for a batch of preprocessed windows: extraction's features and the clips.

    Parameters
    ----------
    clips
        float32 ``[batch, n]`` at ``config.audio.target_sample_rate_hz``.

    Returns
    -------
    :func:`ser_udfs.features.compute.compute_features_batch` of ``clips`` with ``config`` (as
    extraction computes a table's rows), plus ``"waveform"``: ``clips`` themselves, for models
    that take preprocessed audio (as a table kept with ``output.keep_waveform``).
    """
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    return {**compute_features_batch(clips, config.audio.target_sample_rate_hz, config), "waveform": clips}


def predict_windows(predictor: Predictor, windows: Sequence[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Preprocess, featurise and predict windows cut from a call at the model's rate.

    Each window is a clip to extraction: :func:`~ser_udfs.audio.preprocess.check_not_silent`
    and :func:`~ser_udfs.audio.preprocess.condition_clip` (a window without signal is left out,
    as extraction reports a silent clip instead of featurising it), then :func:`window_batch`.

    Parameters
    ----------
    predictor
        The model; its ``feature_config`` decides preprocessing and features.
    windows
        float32 ``[n_i]`` each, at most the model's clip length.

    Returns
    -------
    kept
        Indices into ``windows`` of the windows scored, in order.
    probabilities
        float32 ``[len(kept), len(predictor.labels)]``.
    """
    audio = predictor.feature_config.audio
    kept, clips = [], []
    for index, samples in enumerate(windows):
        try:
            check_not_silent(samples, audio)
            clips.append(condition_clip(samples, audio))
        except ClipError:
            continue
        kept.append(index)
    if not clips:
        return kept, np.zeros((0, len(predictor.labels)), dtype=np.float32)
    batch = window_batch(np.stack(clips), predictor.feature_config)
    return kept, np.asarray(predictor.predict_proba(batch), dtype=np.float32)


def check_predictor(predictor: Predictor, window: WindowConfig) -> WindowGeometry:
    """The window geometry, after one window of noise went through :func:`predict_windows`.

    Run on the driver, so that a model the scoring cannot feed fails once with its own message,
    not once per call.

    Raises
    ------
    UserError
        From :func:`window_geometry`, from the model, or when the model returns probabilities
        of another shape than ``[1, len(labels)]`` or not finite.
    """
    geometry = window_geometry(predictor.feature_config, window)
    noise = np.random.default_rng(0).standard_normal(geometry.window_samples).astype(np.float32) * 0.1
    _, probabilities = predict_windows(predictor, [noise])
    if probabilities.shape != (1, len(predictor.labels)):
        raise UserError(f"the model returned probabilities of shape {probabilities.shape} for one window")
    if not np.isfinite(probabilities).all():
        raise UserError(
            "the model returned NaN or infinite probabilities for a window of noise; the model bundle is broken: "
            "train it again or use another"
        )
    return geometry


@dataclass
class ChannelScores:
    """The raw results of one scored channel.

    Attributes
    ----------
    name
        ``"0"``, ``"1"``, ... or ``"mix"``.
    n_samples
        Length of the channel at the model's rate.
    regions
        int64 ``[n_regions, 2]``: speech regions (start, end sample).
    window_starts
        int64 ``[n_windows]``: start sample of each scored window (multiples of the hop).
    probabilities
        float32 ``[n_windows, n_classes]``: the model's output per scored window, unsmoothed.
    """

    name: str
    n_samples: int
    regions: np.ndarray
    window_starts: np.ndarray
    probabilities: np.ndarray

    @property
    def speech_samples(self) -> int:
        """Samples inside speech regions."""
        return int((self.regions[:, 1] - self.regions[:, 0]).sum())


@dataclass
class CallScores:
    """Everything :func:`score_call` learnt about one call."""

    info: AudioInfo
    geometry: WindowGeometry
    labels: tuple[str, ...]
    channels: list[ChannelScores]

    @property
    def windows_scored(self) -> int:
        """Scored windows over all channels."""
        return sum(len(channel.window_starts) for channel in self.channels)


@dataclass(frozen=True)
class Segment:
    """One stretch of a channel's timeline; ``label`` and ``probabilities`` are None outside
    scored speech."""

    channel: str
    start_s: float
    end_s: float
    speech: bool
    label: str | None
    confidence: float | None
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class Stretch:
    """A stretch of one negative emotion on one channel (segments joined across short pauses)."""

    channel: str
    start_s: float
    end_s: float
    label: str
    confidence: float


@dataclass(frozen=True)
class CallSummary:
    """The per-call row: speech time, emotion shares, uncertain speech time left out of them,
    dominant emotion, negative stretches."""

    duration_s: float
    speech_s: dict[str, float]
    emotion_share: dict[str, float]
    uncertain_s: float
    dominant_emotion: str | None
    negative_stretches: list[Stretch]
    status: str


class _ChannelStream:
    """Speech detection and window cutting for one channel, fed block by block."""

    def __init__(self, name: str, vad: VadConfig, geometry: WindowGeometry) -> None:
        self.name = name
        self.geometry = geometry
        self.detector = SpeechDetector(vad, geometry.sample_rate)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0
        self.received = 0
        self.finished = False
        self.next_window = 0
        self.region_cursor = 0
        self.window_starts: list[int] = []
        self.probabilities: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        self.detector.push(samples)
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += samples.size

    def finish(self) -> None:
        self.detector.finish()
        self.finished = True

    def _speech_in(self, start: int, end: int) -> int:
        regions = self.detector.regions
        while self.region_cursor < len(regions) and regions[self.region_cursor][1] <= start:
            self.region_cursor += 1
        total = 0
        for region_start, region_end in regions[self.region_cursor :]:
            if region_start >= end:
                break
            total += min(end, region_end) - max(start, region_start)
        provisional = self.detector.provisional_region
        if provisional is not None:
            total += max(0, min(end, provisional[1]) - max(start, provisional[0]))
        return total

    def ready_windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """Windows whose speech decision is final: ``(start sample, samples)`` of those to score."""
        geometry = self.geometry
        window, hop = geometry.window_samples, geometry.hop_samples
        limit = self.detector.final_sample
        while True:
            start = self.next_window * hop
            if self.finished:
                if self.next_window > 0 and start - hop + window >= self.received:
                    break
            elif start + window > limit:
                break
            end = min(start + window, self.received)
            if end > start and self._speech_in(start, end) >= max(1, geometry.min_speech_samples):
                yield start, self.buffer[start - self.buffer_start : end - self.buffer_start].copy()
            self.next_window += 1
        cut = min(self.next_window * hop, self.received) - self.buffer_start
        if cut > 0:
            self.buffer = self.buffer[cut:]
            self.buffer_start += cut

    def result(self, n_classes: int) -> ChannelScores:
        order = np.argsort(self.window_starts, kind="stable")
        probabilities = np.array(self.probabilities, dtype=np.float32).reshape(-1, n_classes)[order]
        return ChannelScores(
            name=self.name,
            n_samples=self.received,
            regions=np.array(self.detector.regions, dtype=np.int64).reshape(-1, 2),
            window_starts=np.array(self.window_starts, dtype=np.int64)[order],
            probabilities=probabilities,
        )


class _WindowBatcher:
    """Collects windows from all channels and scores them in batches (:func:`predict_windows`)."""

    def __init__(self, predictor: Predictor, batch_windows: int) -> None:
        self.predictor = predictor
        self.batch_windows = batch_windows
        self.pending: list[tuple[_ChannelStream, int, np.ndarray]] = []

    def add(self, stream: _ChannelStream) -> None:
        for start, samples in stream.ready_windows():
            self.pending.append((stream, start, samples))
            if len(self.pending) >= self.batch_windows:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        kept, probabilities = predict_windows(self.predictor, [samples for _, _, samples in pending])
        for index, row in zip(kept, probabilities):
            stream, start, _ = pending[index]
            if not np.isfinite(row).all():
                rate = self.predictor.feature_config.audio.target_sample_rate_hz
                raise ClipError(
                    "internal",
                    f"the model returned NaN or infinite probabilities for the window at {start / rate:.2f} s of "
                    f"channel {stream.name}, so the call was not scored; the model bundle is broken: train it "
                    "again or use another",
                )
            stream.window_starts.append(start)
            stream.probabilities.append(row)


def _channel_blocks(
    source: AudioSource, info: AudioInfo, plan: Sequence[tuple[str, tuple[int, ...]]], audio: AudioConfig, block_s: float
) -> Iterator[tuple[np.ndarray, int, bool]]:
    """The scored channels of a call at the model's rate, as decoding goes.

    Yields
    ------
    samples
        float32 ``[len(plan), m]``: the next resampled samples of each scored channel.
    source_frames
        Frames decoded for this block (0 for the last, which flushes the resampler).
    last
        True for the last block.

    Raises
    ------
    ClipError
        For non-finite samples in any channel, a file without samples, or one shorter than
        ``audio.min_duration_s``.
    """
    resampler = Resampler(
        info.sample_rate, audio.target_sample_rate_hz, channels=len(plan), quality=audio.resample_quality
    )
    decoded = 0
    for block, _ in stream_audio_blocks(source, block_frames=max(1, int(round(block_s * info.sample_rate)))):
        check_finite(block)
        decoded += block.shape[1]
        yield resampler.push(np.stack([downmix(block[list(indices)]) for _, indices in plan])), block.shape[1], False
    if decoded == 0:
        raise ClipError("empty", "the file holds no audio samples")
    check_duration(decoded, info.sample_rate, audio)
    yield resampler.push(np.zeros((len(plan), 0), dtype=np.float32), last=True), 0, True


def score_call(
    source: AudioSource,
    predictor: Predictor,
    config: CallScoringConfig,
    *,
    channels: ChannelChoice = "all",
) -> CallScores:
    """Decode, detect speech, window, featurise and predict one call, streaming.

    Parameters
    ----------
    source
        A path (``str`` or ``os.PathLike``), the file's bytes, or a seekable binary file object.
    predictor
        The model (its ``feature_config`` decides the rate, window length and features).
    config
        Window, speech detection, smoothing, summary and streaming settings.
    channels
        ``"all"`` (each channel on its own), ``"mix"`` (their average) or channel indices.

    Raises
    ------
    ClipError
        For a file that cannot be decoded, holds no samples or non-finite samples, is shorter
        than ``audio.min_duration_s``, or lacks a requested channel; kind ``internal`` when the
        model returns a NaN or infinite probability for any window (no probability is ever NaN).
    """
    geometry = window_geometry(predictor.feature_config, config.window)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    info = read_info(source)
    if hasattr(source, "seek"):
        source.seek(0)
    plan = channel_plan(channels, info.channels)
    streams = [_ChannelStream(name, config.vad, geometry) for name, _ in plan]
    batcher = _WindowBatcher(predictor, config.stream.batch_windows)
    decoded = 0
    blocks = _channel_blocks(source, info, plan, predictor.feature_config.audio, config.stream.block_s)
    for samples, source_frames, last in blocks:
        decoded += source_frames
        for stream, channel in zip(streams, samples):
            stream.push(np.ascontiguousarray(channel))
            if last:
                stream.finish()
            batcher.add(stream)
    batcher.flush()
    n_classes = len(predictor.labels)
    return CallScores(
        info=AudioInfo(info.sample_rate, info.channels, decoded, info.subtype),
        geometry=geometry,
        labels=tuple(predictor.labels),
        channels=[stream.result(n_classes) for stream in streams],
    )


def smooth_probabilities(window_starts: np.ndarray, probabilities: np.ndarray, hop_samples: int, width: int) -> np.ndarray:
    """Centred moving average over the scored windows within ``width // 2`` hops of each window.

    Parameters
    ----------
    window_starts
        ``[m]`` start samples (multiples of ``hop_samples``), sorted.
    probabilities
        ``[m, n_classes]``.

    Returns
    -------
    float32 ``[m, n_classes]``; rows still sum to 1.
    """
    if width <= 1 or len(window_starts) == 0:
        return probabilities.astype(np.float32, copy=True)
    index = window_starts // hop_samples
    half = width // 2
    dense = np.zeros((int(index[-1]) + 1 + 2 * half, probabilities.shape[1]), dtype=np.float64)
    count = np.zeros(dense.shape[0], dtype=np.float64)
    dense[index + half] = probabilities
    count[index + half] = 1.0
    sums = np.concatenate([np.zeros((1, dense.shape[1])), np.cumsum(dense, axis=0)])
    counts = np.concatenate([[0.0], np.cumsum(count)])
    window_sum = sums[index + 2 * half + 1] - sums[index]
    window_count = counts[index + 2 * half + 1] - counts[index]
    return (window_sum / window_count[:, None]).astype(np.float32)


def channel_segments(channel: ChannelScores, labels: Sequence[str], geometry: WindowGeometry, *, smoothing: int,
                     min_confidence: float = 0.0) -> list[Segment]:
    """The channel's timeline: non-overlapping segments covering ``[0, duration)``, in order.

    A piece whose top probability is under ``min_confidence`` is labelled :data:`UNCERTAIN_LABEL`.
    """
    rate, hop, window = geometry.sample_rate, geometry.hop_samples, geometry.window_samples
    n_samples = channel.n_samples
    probabilities = smooth_probabilities(channel.window_starts, channel.probabilities, hop, smoothing)
    n_grid = 1 + max(0, math.ceil((n_samples - window) / hop)) + 1
    sums = np.zeros((n_grid + 1, len(labels)), dtype=np.float64)
    counts = np.zeros(n_grid + 1, dtype=np.float64)
    grid = channel.window_starts // hop
    np.add.at(sums, grid + 1, probabilities)
    np.add.at(counts, grid + 1, 1.0)
    sums, counts = np.cumsum(sums, axis=0), np.cumsum(counts)

    pieces: list[tuple[int, int, bool, np.ndarray | None]] = []
    position = 0
    for region_start, region_end in channel.regions.tolist():
        if region_start > position:
            pieces.append((position, region_start, False, None))
        cuts = [region_start, *range((region_start // hop + 1) * hop, region_end, hop), region_end]
        for start, end in zip(cuts[:-1], cuts[1:]):
            first = max(0, (start - window) // hop + 1)
            last = min(n_grid - 1, -(-end // hop) - 1)
            covering = counts[last + 1] - counts[first] if last >= first else 0.0
            mean = (sums[last + 1] - sums[first]) / covering if covering > 0 else None
            pieces.append((start, end, True, mean))
        position = region_end
    if position < n_samples:
        pieces.append((position, n_samples, False, None))
    return _merge_pieces(pieces, channel.name, labels, rate, min_confidence)


def _merge_pieces(
    pieces: list[tuple[int, int, bool, np.ndarray | None]], channel: str, labels: Sequence[str], rate: int,
    min_confidence: float,
) -> list[Segment]:
    segments: list[Segment] = []
    run: list[tuple[int, int, bool, np.ndarray | None]] = []
    uncertain = -2

    def key(piece: tuple[int, int, bool, np.ndarray | None]) -> tuple[bool, int]:
        if piece[3] is None:
            return piece[2], -1
        return piece[2], uncertain if float(np.max(piece[3])) < min_confidence else int(np.argmax(piece[3]))

    def close() -> None:
        start, end, speech = run[0][0], run[-1][1], run[0][2]
        if run[0][3] is None:
            segments.append(Segment(channel, start / rate, end / rate, speech, None, None, None))
        else:
            weights = np.array([piece[1] - piece[0] for piece in run], dtype=np.float64)
            mean = (np.stack([piece[3] for piece in run]) * weights[:, None]).sum(axis=0) / weights.sum()
            best = int(np.argmax(mean))
            # Pieces of one run share their label, so the run's mean keeps it: an uncertain run's
            # top probability stays under min_confidence, a labelled run's at or above it.
            label = UNCERTAIN_LABEL if key(run[0])[1] == uncertain else labels[best]
            segments.append(Segment(channel, start / rate, end / rate, speech, label, float(mean[best]), mean.astype(np.float32)))

    for piece in pieces:
        if piece[1] <= piece[0]:
            continue
        if run and (key(piece) != key(run[-1]) or piece[0] != run[-1][1]):
            close()
            run = []
        run.append(piece)
    if run:
        close()
    return segments


def negative_stretches(segments: Sequence[Segment], config: SummaryConfig) -> list[Stretch]:
    """The strongest stretches of negative emotions, most confident first.

    Segments of the same channel and negative label are joined across pauses of at most
    ``stretch_gap_s`` that hold no other label; stretches shorter than ``min_stretch_s`` are left
    out; confidence is the duration-weighted mean probability of the label.
    """
    negative = set(config.negative_labels)
    stretches: list[Stretch] = []
    by_channel: dict[str, list[Segment]] = {}
    for segment in segments:
        by_channel.setdefault(segment.channel, []).append(segment)
    for channel, own in by_channel.items():
        current: list[Segment] = []

        def close() -> None:
            duration = sum(s.end_s - s.start_s for s in current)
            confidence = sum((s.end_s - s.start_s) * (s.confidence or 0.0) for s in current) / duration
            start_s, end_s = current[0].start_s, current[-1].end_s
            if end_s - start_s >= config.min_stretch_s:
                stretches.append(Stretch(channel, start_s, end_s, current[0].label or "", confidence))

        for segment in own:
            if segment.label is None:
                continue
            joins = (
                current
                and segment.label == current[-1].label
                and segment.start_s - current[-1].end_s <= config.stretch_gap_s
            )
            if current and not joins:
                close()
                current = []
            if segment.label in negative:
                current.append(segment)
            elif current:
                close()
                current = []
        if current:
            close()
    stretches.sort(key=lambda s: (-s.confidence, s.channel, s.start_s))
    return stretches[: config.top_stretches]


def summarise_call(scores: CallScores, segments: Sequence[Segment], config: SummaryConfig) -> CallSummary:
    """Speech seconds per channel, share of labelled speech time per emotion (uncertain time left
    out, and counted in ``uncertain_s``), the dominant emotion, and the strongest negative stretches."""
    rate = scores.geometry.sample_rate
    durations = dict.fromkeys(scores.labels, 0.0)
    uncertain_s = 0.0
    for segment in segments:
        if segment.label == UNCERTAIN_LABEL:
            uncertain_s += segment.end_s - segment.start_s
        elif segment.label is not None:
            durations[segment.label] += segment.end_s - segment.start_s
    total = sum(durations.values())
    share = {label: (value / total if total > 0 else 0.0) for label, value in durations.items()}
    return CallSummary(
        duration_s=scores.info.duration_s,
        speech_s={channel.name: channel.speech_samples / rate for channel in scores.channels},
        emotion_share=share,
        uncertain_s=uncertain_s,
        dominant_emotion=max(durations, key=durations.__getitem__) if total > 0 else None,
        negative_stretches=negative_stretches(segments, config),
        status="ok" if scores.windows_scored else "no_speech",
    )


def call_timeline(scores: CallScores, config: CallScoringConfig) -> tuple[list[Segment], CallSummary]:
    """Segments of every scored channel (channel by channel, in time order) and the summary."""
    segments = [
        segment
        for channel in scores.channels
        for segment in channel_segments(channel, scores.labels, scores.geometry, smoothing=config.smoothing.windows,
                                        min_confidence=config.summary.min_confidence)
    ]
    return segments, summarise_call(scores, segments, config.summary)
