"""The timeline of a scored call: segments per channel, and the summary of the whole call.

Per channel: an optional moving average of the window probabilities over neighbouring windows
of the same turn, then a timeline of non-overlapping segments (:func:`channel_segments`) and
the call summary (:func:`summarise_call`).

Timeline rule: inside a turn, time is cut at the edges of its windows; each piece takes the mean
probabilities of the turn's windows overlapping it and their most probable label; consecutive
pieces of a turn with the same label are merged (probabilities weighted by duration). A turn no
window covers (shorter than ``window.min_speech_s``, or without signal) has no label. A piece
whose top probability is under ``summary.min_confidence`` is labelled ``uncertain``
(:data:`UNCERTAIN_LABEL`; its probabilities are kept); uncertain speech counts in no emotion's
share: the summary reports its seconds (``uncertain_s``) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ser_udfs.calls.config import CallScoringConfig, SummaryConfig
from ser_udfs.calls.stream import CallScores, ChannelScores, WindowGeometry

#: The label of timeline pieces whose top probability is under ``summary.min_confidence``.
UNCERTAIN_LABEL = "uncertain"


@dataclass(frozen=True)
class Segment:
    """One stretch of a channel's timeline; ``label`` and ``probabilities`` are None outside
    scored speech, and ``turn`` (the index of the channel's speech turn the segment lies in) is
    None outside speech."""

    channel: str
    start_s: float
    end_s: float
    speech: bool
    label: str | None
    confidence: float | None
    probabilities: np.ndarray | None
    turn: int | None = None


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
    """The emotions of the whole call: speech time, emotion shares, uncertain speech time left
    out of them, dominant emotion, negative stretches (per channel and beyond:
    :mod:`ser_udfs.calls.analytics`)."""

    duration_s: float
    speech_s: dict[str, float]
    emotion_share: dict[str, float]
    uncertain_s: float
    dominant_emotion: str | None
    negative_stretches: list[Stretch]
    status: str


def smooth_probabilities(turns: np.ndarray, probabilities: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over the windows of the same turn within ``width // 2`` windows.

    Parameters
    ----------
    turns
        int ``[m]`` turn index of each window, non-decreasing (windows in time order).
    probabilities
        ``[m, n_classes]``.

    Returns
    -------
    float32 ``[m, n_classes]``; rows still sum to 1. A window never averages across a pause:
    the emotion of one turn says little about the next one's.
    """
    if width <= 1 or len(turns) == 0:
        return probabilities.astype(np.float32, copy=True)
    half = width // 2
    index = np.arange(len(turns))
    first = np.searchsorted(turns, turns, side="left")
    last = np.searchsorted(turns, turns, side="right") - 1
    low, high = np.maximum(index - half, first), np.minimum(index + half, last)
    sums = np.concatenate([np.zeros((1, probabilities.shape[1])), np.cumsum(probabilities, axis=0, dtype=np.float64)])
    return ((sums[high + 1] - sums[low]) / (high - low + 1)[:, None]).astype(np.float32)


_Piece = tuple[int, int, bool, "np.ndarray | None", "int | None"]


def channel_segments(channel: ChannelScores, labels: Sequence[str], geometry: WindowGeometry, *, smoothing: int,
                     min_confidence: float = 0.0) -> list[Segment]:
    """The channel's timeline: non-overlapping segments covering ``[0, duration)``, in order.

    Each turn is cut at the edges of its windows; each piece takes the mean (smoothed)
    probabilities of the turn's windows overlapping it. A piece whose top probability is under
    ``min_confidence`` is labelled :data:`UNCERTAIN_LABEL`.
    """
    probabilities = smooth_probabilities(channel.turns, channel.probabilities, smoothing)
    sums = np.concatenate([np.zeros((1, len(labels))), np.cumsum(probabilities, axis=0, dtype=np.float64)])
    pieces: list[_Piece] = []
    position = 0
    for turn, (region_start, region_end) in enumerate(channel.regions.tolist()):
        if region_start > position:
            pieces.append((position, region_start, False, None, None))
        low, high = np.searchsorted(channel.turns, [turn, turn + 1])
        starts, ends = channel.windows[low:high, 0], channel.windows[low:high, 1]
        cuts = sorted({region_start, region_end, *starts.tolist(), *ends.tolist()})
        for start, end in zip(cuts[:-1], cuts[1:]):
            # windows of the turn overlapping [start, end): their starts and ends both increase
            first = low + int(np.searchsorted(ends, start, side="right"))
            last = low + int(np.searchsorted(starts, end, side="left"))
            mean = (sums[last] - sums[first]) / (last - first) if last > first else None
            pieces.append((start, end, True, mean, turn))
        position = region_end
    if position < channel.n_samples:
        pieces.append((position, channel.n_samples, False, None, None))
    return _merge_pieces(pieces, channel.name, labels, geometry.sample_rate, min_confidence)


def _merge_pieces(pieces: list[_Piece], channel: str, labels: Sequence[str], rate: int,
                  min_confidence: float) -> list[Segment]:
    segments: list[Segment] = []
    run: list[_Piece] = []
    uncertain = -2

    def key(piece: _Piece) -> tuple[bool, int | None, int]:
        if piece[3] is None:
            return piece[2], piece[4], -1
        label = uncertain if float(np.max(piece[3])) < min_confidence else int(np.argmax(piece[3]))
        return piece[2], piece[4], label

    def close() -> None:
        start, end, speech, turn = run[0][0], run[-1][1], run[0][2], run[0][4]
        if run[0][3] is None:
            segments.append(Segment(channel, start / rate, end / rate, speech, None, None, None, turn))
        else:
            weights = np.array([piece[1] - piece[0] for piece in run], dtype=np.float64)
            mean = (np.stack([piece[3] for piece in run]) * weights[:, None]).sum(axis=0) / weights.sum()
            best = int(np.argmax(mean))
            # Pieces of one run share their label, so the run's mean keeps it: an uncertain run's
            # top probability stays under min_confidence, a labelled run's at or above it.
            label = UNCERTAIN_LABEL if key(run[0])[2] == uncertain else labels[best]
            segments.append(Segment(channel, start / rate, end / rate, speech, label, float(mean[best]),
                                    mean.astype(np.float32), turn))

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


@dataclass(frozen=True)
class EmotionTime:
    """Labelled speech time of some segments: ``share`` of it per label (0 without any),
    ``uncertain_s`` (left out of the shares) and the label with the largest share."""

    share: dict[str, float]
    uncertain_s: float
    dominant: str | None


def emotion_time(segments: Sequence[Segment], labels: Sequence[str]) -> EmotionTime:
    """:class:`EmotionTime` of ``segments`` (speech without a label counts nowhere)."""
    durations = dict.fromkeys(labels, 0.0)
    uncertain_s = 0.0
    for segment in segments:
        if segment.label == UNCERTAIN_LABEL:
            uncertain_s += segment.end_s - segment.start_s
        elif segment.label is not None:
            durations[segment.label] += segment.end_s - segment.start_s
    total = sum(durations.values())
    return EmotionTime(
        share={label: (value / total if total > 0 else 0.0) for label, value in durations.items()},
        uncertain_s=uncertain_s,
        dominant=max(durations, key=durations.__getitem__) if total > 0 else None,
    )


def summarise_call(scores: CallScores, segments: Sequence[Segment], config: SummaryConfig) -> CallSummary:
    """Speech seconds per channel, share of labelled speech time per emotion (uncertain time left
    out, and counted in ``uncertain_s``), the dominant emotion and the strongest negative stretches."""
    rate = scores.geometry.sample_rate
    emotions = emotion_time(segments, scores.labels)
    return CallSummary(
        duration_s=scores.info.duration_s,
        speech_s={channel.name: channel.speech_samples / rate for channel in scores.channels},
        emotion_share=emotions.share,
        uncertain_s=emotions.uncertain_s,
        dominant_emotion=emotions.dominant,
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
