"""Scoring one recorded call: calibrated emotion probabilities of the speech turns of each channel.

Pure NumPy, no Spark (the Spark wrapper is :mod:`ser_udfs.spark.score`). For each call:

1. decode the file in blocks of ``stream.block_s`` (:func:`ser_udfs.audio.decode.stream_audio_blocks`);
   never the whole file, so memory stays flat however long the call;
2. check each block as extraction checks a clip (:func:`ser_udfs.audio.preprocess.check_finite`,
   then :func:`~ser_udfs.audio.preprocess.check_duration` on the whole call), keep the chosen
   channels (each one scored on its own) or their average (``"mix"``), and resample them to
   the model's rate with extraction's resampler (:class:`ser_udfs.audio.preprocess.Resampler`,
   fed block by block: the same samples as resampling the whole signal);
3. detect speech per channel (:class:`ser_udfs.audio.vad.SpeechDetector`): its regions are the
   channel's **turns**;
4. cut the scoring units inside each turn (:func:`turn_windows`): a turn up to the model's clip
   length is one unit, scored whole as a clip is (the model learnt whole, trimmed utterances); a
   longer turn is cut into clip-length windows every ``window.hop_s`` from its start, the last
   one ending at its end. A unit never spans a pause between turns, and turns shorter than
   ``window.min_speech_s`` are not scored;
5. each unit goes through extraction's steps (:func:`predict_windows`): the silent check,
   :func:`~ser_udfs.audio.preprocess.condition_clip` (trim, fix to the clip length) and
   :func:`ser_udfs.features.compute.compute_features_batch` with the model's feature config, in
   batches, then the model's :meth:`Predictor.window_outputs` (small per-window vectors, kept
   for the whole call);
6. per channel, once the call is decoded: :meth:`Predictor.channel_probabilities` of all the
   channel's windows. A model that standardises statistics per speaker
   (:attr:`Predictor.adapts_to_speaker`) takes each scored channel as one speaker and its
   statistics from that channel's windows over the whole call (``adaptation = "speaker"``);
   with fewer than ``adaptation.min_windows`` windows, or ``adaptation.mode = "off"``, it uses
   its part that needs no speaker statistics (``adaptation = "none"``). ``"mix"`` and a mono file
   are one channel: one "speaker" whose statistics pool everyone on it.

The timeline and summary of the scores are :mod:`ser_udfs.calls.timeline`'s; the turns,
talk and escalation figures :mod:`ser_udfs.calls.analytics`'s; the table rows
:mod:`ser_udfs.calls.tables`'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Literal, Protocol, Sequence

import numpy as np

from ser_udfs.audio.decode import AudioInfo, AudioSource, read_info, stream_audio_blocks
from ser_udfs.audio.preprocess import Resampler, check_duration, check_finite, check_not_silent, condition_clip, downmix
from ser_udfs.audio.vad import SpeechDetector, VadConfig
from ser_udfs.calls.config import AdaptationConfig, CallScoringConfig, WindowConfig
from ser_udfs.errors import ClipError, UserError
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.features.config import AudioConfig, FeatureConfig

ChannelChoice = Literal["all", "mix"] | tuple[int, ...]


class Predictor(Protocol):
    """What scoring needs from a model (:class:`training.inference.CallModel` wraps a bundle).

    Scoring is two-phase so that a model may depend on all of a channel's windows (speaker
    adaptation) while decoding stays streamed: :meth:`window_outputs` of each batch of windows
    as they are cut (small vectors, buffered per channel), then :meth:`channel_probabilities`
    of all of a channel's buffered outputs once the call is decoded.
    """

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def adapts_to_speaker(self) -> bool:
        """Whether :meth:`channel_probabilities` can standardise statistics over the channel."""
        ...

    feature_config: FeatureConfig

    def window_outputs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """float32 ``[batch, m]`` for the arrays :func:`window_batch` makes."""
        ...

    def channel_probabilities(self, outputs: np.ndarray, *, adapt: bool) -> np.ndarray:
        """Calibrated float32 ``[n, len(labels)]`` of one channel's ``[n, m]`` window outputs
        (``adapt``: take the ``n`` windows as one speaker; only when :attr:`adapts_to_speaker`)."""
        ...

@dataclass(frozen=True)
class WindowGeometry:
    """Windows in samples at the model's rate; ``min_speech_samples``: the shortest turn scored."""

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
    if not 0 <= window.min_speech_s <= window_s:
        raise UserError(f"window.min_speech_s {window.min_speech_s} s must lie between 0 and the {window_s} s window")
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


def turn_windows(start: int, end: int, geometry: WindowGeometry) -> list[tuple[int, int]]:
    """The scoring units of the turn ``[start, end)``, in samples at the model's rate.

    A turn shorter than ``geometry.min_speech_samples`` has none; one up to the window length is
    one unit, the turn itself; a longer one gets windows of the window length starting every hop
    from its start, and one more ending at its end when the last of them stops short of it.

    Returns
    -------
    ``(start, end)`` of each unit, in order; starts and ends both increase.
    """
    window, hop = geometry.window_samples, geometry.hop_samples
    length = end - start
    if length < max(1, geometry.min_speech_samples):
        return []
    if length <= window:
        return [(start, end)]
    units = [(first, first + window) for first in range(start, end - window + 1, hop)]
    if units[-1][1] < end:
        units.append((end - window, end))
    return units


def predict_windows(predictor: Predictor, windows: Sequence[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Preprocess, featurise and run the model's first phase on windows cut from a call.

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
    outputs
        float32 ``[len(kept), m]``: :meth:`Predictor.window_outputs`.
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
        return kept, np.zeros((0, 0), dtype=np.float32)
    batch = window_batch(np.stack(clips), predictor.feature_config)
    return kept, np.asarray(predictor.window_outputs(batch), dtype=np.float32)


def check_predictor(predictor: Predictor, window: WindowConfig) -> WindowGeometry:
    """The window geometry, after windows of noise went through both phases of the model.

    Run on the driver, so that a model the scoring cannot feed fails once with its own message,
    not once per call. Both paths of a speaker-adaptive model are tried.

    Raises
    ------
    UserError
        From :func:`window_geometry`, from the model, or when the model returns probabilities
        of another shape than ``[n, len(labels)]`` or not finite.
    """
    geometry = window_geometry(predictor.feature_config, window)
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(geometry.window_samples).astype(np.float32) * 0.1 for _ in range(2)]
    _, outputs = predict_windows(predictor, noise)
    for adapt in (False, True) if predictor.adapts_to_speaker else (False,):
        probabilities = np.asarray(predictor.channel_probabilities(outputs, adapt=adapt))
        if probabilities.shape != (2, len(predictor.labels)):
            raise UserError(f"the model returned probabilities of shape {probabilities.shape} for two windows")
        if not np.isfinite(probabilities).all():
            raise UserError(
                "the model returned NaN or infinite probabilities for windows of noise; the model bundle is broken: "
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
        int64 ``[n_turns, 2]``: speech turns (start, end sample).
    windows
        int64 ``[n_windows, 2]``: start and end sample of each scored window (:func:`turn_windows`),
        in time order.
    turns
        int64 ``[n_windows]``: the index into ``regions`` of each window's turn.
    probabilities
        float32 ``[n_windows, n_classes]``: the model's calibrated output per scored window, unsmoothed.
    adaptation
        ``"speaker"`` when the probabilities standardise statistics over this channel's windows,
        ``"none"`` when they come from a model (or model part) that needs no speaker statistics.
    """

    name: str
    n_samples: int
    regions: np.ndarray
    windows: np.ndarray
    turns: np.ndarray
    probabilities: np.ndarray
    adaptation: str = "none"

    @property
    def speech_samples(self) -> int:
        """Samples inside speech turns."""
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
        return sum(len(channel.windows) for channel in self.channels)


class _ChannelStream:
    """Speech detection and turn windows for one channel, fed block by block.

    Windows are cut as soon as the detector's decisions allow: inside a turn still going on
    (:attr:`~ser_udfs.audio.vad.SpeechDetector.provisional_region`) the regular windows that
    fit, and the rest of a turn once it has ended, so the same windows come out as
    :func:`turn_windows` of the final turns, whatever the block sizes. The buffer keeps only the
    samples a later window can still need.
    """

    def __init__(self, name: str, vad: VadConfig, geometry: WindowGeometry) -> None:
        self.name = name
        self.geometry = geometry
        self.detector = SpeechDetector(vad, geometry.sample_rate)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0
        self.received = 0
        self.turn = 0  # index of the turn being windowed
        self.next_window = 0  # regular windows of that turn cut so far
        self.windows: list[tuple[int, int]] = []
        self.turns: list[int] = []
        self.outputs: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        self.detector.push(samples)
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += samples.size

    def finish(self) -> None:
        self.detector.finish()

    def ready_windows(self) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """Windows whose turn is known far enough: ``(start, end, turn, samples)``, in time order."""
        window, hop = self.geometry.window_samples, self.geometry.hop_samples
        regions = self.detector.regions
        while True:
            complete = self.turn < len(regions)
            region = regions[self.turn] if complete else self.detector.provisional_region
            if region is None:
                break
            start, end = region
            if complete and end - start <= window:
                units = turn_windows(start, end, self.geometry) if self.next_window == 0 else []
            else:
                units = []
                while start + self.next_window * hop + window <= end:
                    first = start + self.next_window * hop
                    units.append((first, first + window))
                    self.next_window += 1
                if complete and start + (self.next_window - 1) * hop + window < end:
                    units.append((end - window, end))
            for first, last in units:
                yield first, last, self.turn, self.buffer[first - self.buffer_start : last - self.buffer_start].copy()
            if not complete:
                break
            self.turn += 1
            self.next_window = 0
        self._trim(regions)

    def _trim(self, regions: list[tuple[int, int]]) -> None:
        """Drop the samples no later window can need."""
        region = regions[self.turn] if self.turn < len(regions) else self.detector.provisional_region
        if region is None:
            keep = self.detector.final_sample
        else:
            start, end = region
            keep = min(start + self.next_window * self.geometry.hop_samples, max(start, end - self.geometry.window_samples))
        cut = min(keep, self.received) - self.buffer_start
        if cut > 0:
            self.buffer = self.buffer[cut:]
            self.buffer_start += cut

    def result(self, predictor: Predictor, adaptation: AdaptationConfig) -> ChannelScores:
        """The channel's scores: :meth:`Predictor.channel_probabilities` of all its window outputs.

        Raises
        ------
        ClipError
            Kind ``internal`` when the model returns a NaN or infinite probability for a window.
        """
        adapt = (predictor.adapts_to_speaker and adaptation.mode == "speaker"
                 and len(self.outputs) >= adaptation.min_windows)
        n_classes = len(predictor.labels)
        if self.outputs:
            probabilities = np.asarray(predictor.channel_probabilities(np.stack(self.outputs), adapt=adapt),
                                       dtype=np.float32)
        else:
            probabilities = np.zeros((0, n_classes), dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(probabilities).all(axis=1))
        if bad.size:
            rate = self.geometry.sample_rate
            raise ClipError(
                "internal",
                f"the model returned NaN or infinite probabilities for the window at {self.windows[bad[0]][0] / rate:.2f} s "
                f"of channel {self.name}, so the call was not scored; the model bundle is broken: train it "
                "again or use another",
            )
        return ChannelScores(
            name=self.name,
            n_samples=self.received,
            regions=np.array(self.detector.regions, dtype=np.int64).reshape(-1, 2),
            windows=np.array(self.windows, dtype=np.int64).reshape(-1, 2),
            turns=np.array(self.turns, dtype=np.int64),
            probabilities=probabilities,
            adaptation="speaker" if adapt else "none",
        )


class _WindowBatcher:
    """Collects windows from all channels and runs them through the model in batches (:func:`predict_windows`)."""

    def __init__(self, predictor: Predictor, batch_windows: int) -> None:
        self.predictor = predictor
        self.batch_windows = batch_windows
        self.pending: list[tuple[_ChannelStream, int, int, int, np.ndarray]] = []

    def add(self, stream: _ChannelStream) -> None:
        for start, end, turn, samples in stream.ready_windows():
            self.pending.append((stream, start, end, turn, samples))
            if len(self.pending) >= self.batch_windows:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        kept, outputs = predict_windows(self.predictor, [samples for *_, samples in pending])
        for index, row in zip(kept, outputs):
            stream, start, end, turn, _ = pending[index]
            stream.windows.append((start, end))
            stream.turns.append(turn)
            stream.outputs.append(row)


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


def _open(source: AudioSource) -> tuple[AudioSource, AudioInfo]:
    """The source as the decoder reads it, and its facts (a file object is rewound)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    info = read_info(source)
    if hasattr(source, "seek"):
        source.seek(0)
    return source, info


def speech_turns(
    source: AudioSource, audio: AudioConfig, config: CallScoringConfig, *, channels: ChannelChoice = "all"
) -> tuple[AudioInfo, list[tuple[str, np.ndarray]]]:
    """The speech turns of a call's channels, as scoring finds them, without a model.

    The same decoding, resampling to ``audio.target_sample_rate_hz`` and speech detection as
    :func:`score_call` (so the same turns), for analytics and benches that need no emotion.

    Returns
    -------
    info
        The file's facts (frames decoded).
    turns
        ``(channel name, int64 [n, 2] turns in samples at the target rate)`` per scored channel.
    """
    source, info = _open(source)
    plan = channel_plan(channels, info.channels)
    detectors = [SpeechDetector(config.vad, audio.target_sample_rate_hz) for _ in plan]
    decoded = 0
    for samples, source_frames, last in _channel_blocks(source, info, plan, audio, config.stream.block_s):
        decoded += source_frames
        for detector, channel in zip(detectors, samples):
            detector.push(np.ascontiguousarray(channel))
            if last:
                detector.finish()
    return AudioInfo(info.sample_rate, info.channels, decoded, info.subtype), [
        (name, np.array(detector.regions, dtype=np.int64).reshape(-1, 2)) for (name, _), detector in zip(plan, detectors)
    ]


def score_call(
    source: AudioSource,
    predictor: Predictor,
    config: CallScoringConfig,
    *,
    channels: ChannelChoice = "all",
) -> CallScores:
    """Decode, detect speech, cut turn windows, featurise and predict one call, streaming.

    Parameters
    ----------
    source
        A path (``str`` or ``os.PathLike``), the file's bytes, or a seekable binary file object.
    predictor
        The model (its ``feature_config`` decides the rate, window length and features).
    config
        Window, speech detection, adaptation, smoothing, summary and streaming settings.
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
    source, info = _open(source)
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
    return CallScores(
        info=AudioInfo(info.sample_rate, info.channels, decoded, info.subtype),
        geometry=geometry,
        labels=tuple(predictor.labels),
        channels=[stream.result(predictor, config.adaptation) for stream in streams],
    )
