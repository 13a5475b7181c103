"""What a contact-centre team reads from a scored call: turns, talk, per-channel emotion, escalation.

Pure NumPy over :class:`~ser_udfs.calls.stream.CallScores` and the timeline's segments
(:mod:`ser_udfs.calls.timeline`); :func:`analyse_call` gives everything the ``turns``,
``channels`` and ``calls`` tables hold beyond the timeline. The figures that compare channels
(overlap, interruptions, reply gaps) need two or more scored channels; with one (a mono file,
``--channels mix``, one channel chosen) they are None and :attr:`CallAnalytics.note` says so.

Definitions, on the speech turns of the detector (``[vad]``; a turn is a speech region, pauses
up to ``vad.bridge_gap_s`` bridged inside it):

- talk: a channel's seconds inside its turns; silence: nobody speaks; overlap: two or more
  channels speak at once;
- interruption: a turn starting while another channel has been speaking for at least
  ``analytics.interruption_after_s`` and that channel stops within
  ``analytics.interruption_stop_s`` of the start;
- reply gap: the pause between the end of one channel's speech and the start of another's turn,
  when nobody spoke in between and the other channel was not speaking already;
- per channel, from its labelled timeline segments (``uncertain`` and unscored speech left out):
  the emotion share weighted by duration, the negative share (``summary.negative_labels``) over
  the channel's speech, within the first and last third of the call, the longest negative
  stretch (negative segments joined across pauses of at most ``summary.stretch_gap_s`` without
  another label), and "ended negative" (``analytics.ended_negative_*``);
- the escalation score and its reasons (:class:`~ser_udfs.calls.config.EscalationConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ser_udfs.calls.config import AnalyticsConfig, CallScoringConfig, EscalationConfig
from ser_udfs.calls.stream import CallScores, ChannelScores
from ser_udfs.calls.timeline import UNCERTAIN_LABEL, Segment, emotion_time

#: The channel number of ``--channels mix`` (the average of all channels).
MIX_CHANNEL = -1


def channel_number(name: str) -> int:
    """The source channel index of a scored channel's name (``"0"`` → 0), :data:`MIX_CHANNEL` for ``"mix"``."""
    return MIX_CHANNEL if name == "mix" else int(name)


def channel_role(channel: str, n_channels: int, customer_channel: int) -> str:
    """``customer`` for the customer channel of a file with several channels, ``agent`` for the
    other one of a stereo file, ``unknown`` otherwise (a mix, a mono file, a third channel)."""
    if channel == "mix" or n_channels < 2:
        return "unknown"
    if channel == str(customer_channel):
        return "customer"
    return "agent" if n_channels == 2 else "unknown"


def union_spans(regions: Sequence[np.ndarray]) -> np.ndarray:
    """The union of several ``[n_i, 2]`` span arrays: ``[m, 2]``, sorted, not overlapping or touching."""
    spans = sorted(tuple(span) for part in regions for span in np.asarray(part).tolist())
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.array(merged, dtype=np.int64).reshape(-1, 2)


def overlap_spans(regions: Sequence[np.ndarray]) -> np.ndarray:
    """Where two or more of the channels' spans (``[n_i, 2]`` each) overlap: ``[m, 2]``, sorted."""
    events = sorted((int(edge), step) for part in regions for start, end in np.asarray(part).tolist()
                    for edge, step in ((start, 1), (end, -1)))
    spans: list[list[int]] = []
    active = 0
    for edge, step in events:  # ends sort before starts at the same sample
        if active == 1 and step == 1:
            spans.append([edge, edge])
        elif active == 2 and step == -1:
            spans[-1][1] = edge
        active += step
    return union_spans([np.array([span for span in spans if span[1] > span[0]], dtype=np.int64).reshape(-1, 2)])


def covered_samples(start: int, end: int, spans: np.ndarray) -> int:
    """Samples of ``[start, end)`` inside ``spans`` (``[n, 2]``, sorted, not overlapping)."""
    if len(spans) == 0:
        return 0
    shared = np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start)
    return int(np.clip(shared, 0, None).sum())


def _covering(spans: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the span of ``spans`` (``[n, 2]``, sorted, not overlapping) with ``start < t < end``
    for each of ``times``, or -1."""
    spans = np.asarray(spans).reshape(-1, 2)
    index = np.searchsorted(spans[:, 0], times, side="left") - 1
    inside = (index >= 0) & (spans[np.maximum(index, 0), 1] > times) if len(spans) else np.zeros(len(times), bool)
    return np.where(inside, index, -1)


def interruption_turns(regions: Sequence[np.ndarray], rate: int, config: AnalyticsConfig) -> list[np.ndarray]:
    """Which turns of each channel are interruptions (see the module docstring).

    Parameters
    ----------
    regions
        int ``[n_c, 2]`` speech turns of each channel (sorted, not overlapping), in samples at ``rate``.

    Returns
    -------
    bool ``[n_c]`` per channel.
    """
    after, stop = config.interruption_after_s * rate, config.interruption_stop_s * rate
    flags = []
    for index, own in enumerate(regions):
        starts = np.asarray(own).reshape(-1, 2)[:, 0]
        hit = np.zeros(len(starts), dtype=bool)
        for other_index, other in enumerate(regions):
            other = np.asarray(other).reshape(-1, 2)
            if other_index == index or not len(other):
                continue
            covering = _covering(other, starts)
            speaking = covering >= 0
            span = other[np.maximum(covering, 0)]
            hit |= speaking & (starts - span[:, 0] >= after) & (span[:, 1] - starts <= stop)
        flags.append(hit)
    return flags


def reply_gaps(regions: Sequence[np.ndarray]) -> np.ndarray:
    """The reply gaps of a call (see the module docstring), in samples, in the order of the replies.

    Parameters
    ----------
    regions
        int ``[n_c, 2]`` speech turns of each channel (sorted, not overlapping).
    """
    parts = [np.asarray(part).reshape(-1, 2) for part in regions]
    spans = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    owners = np.concatenate([np.full(len(part), channel) for channel, part in enumerate(parts)]) if parts else []
    by_end = np.argsort(spans[:, 1], kind="stable")
    ends, end_owners = spans[by_end, 1], np.asarray(owners)[by_end]
    gaps = []
    for start, channel in sorted(zip(spans[:, 0].tolist(), np.asarray(owners).tolist())):
        last = int(np.searchsorted(ends, start, side="right")) - 1
        if last < 0:
            continue
        last_end = ends[last]
        replied = not (end_owners[ends == last_end] == channel).any()
        already = any(_covering(part, np.array([start]))[0] >= 0 for other, part in enumerate(parts) if other != channel)
        if replied and not already:
            gaps.append(start - int(last_end))
    return np.array(gaps, dtype=np.int64)


@dataclass(frozen=True)
class TalkFigures:
    """Who talked when over the whole call (None where it takes two scored channels).

    Attributes
    ----------
    talk_s, silence_s, overlap_s
        Seconds in which some channel speaks, nobody does, two or more do at once.
    interruptions
        Interrupting turns, all channels.
    median_reply_gap_s
        The median reply gap; None also when no channel replied to another.
    """

    talk_s: float
    silence_s: float
    overlap_s: float | None
    interruptions: int | None
    median_reply_gap_s: float | None


@dataclass(frozen=True)
class TurnScore:
    """One speech turn of a channel, as the ``turns`` table holds it.

    Attributes
    ----------
    channel, turn
        The channel's name and the turn's index in it (as in :class:`~ser_udfs.calls.timeline.Segment`).
    start_s, end_s
        Where the turn lies in the call.
    label, confidence, probabilities
        The mean of the turn's windows' calibrated probabilities (each weighted by its length;
        a turn up to the clip length has one window, the turn itself), its top label
        (``uncertain`` under ``summary.min_confidence``) and top probability; None for a turn
        without a scored window.
    windows
        Scored windows in the turn.
    overlap_s, interruption
        Seconds of the turn during which another scored channel speaks, and whether the turn
        is an interruption; None when only one channel is scored (nothing to compare with).
    """

    channel: str
    turn: int
    start_s: float
    end_s: float
    label: str | None
    confidence: float | None
    probabilities: np.ndarray | None
    windows: int
    overlap_s: float | None
    interruption: bool | None


@dataclass(frozen=True)
class ChannelFigures:
    """One scored channel's talk and emotion figures (see the module docstring).

    ``negative_share*`` and ``ended_negative`` are None where the channel has no labelled speech
    (in that third of the call); ``ending_negative_share`` is the figure ``ended_negative``
    compares with ``analytics.ended_negative_share``.
    """

    channel: str
    role: str
    talk_s: float
    talk_share: float
    turn_count: int
    mean_turn_s: float
    longest_turn_s: float
    interruptions: int | None
    emotion_share: dict[str, float]
    uncertain_s: float
    dominant_emotion: str | None
    negative_share: float | None
    negative_share_first_third: float | None
    negative_share_last_third: float | None
    longest_negative_s: float
    ending_negative_share: float | None
    ended_negative: bool | None


@dataclass(frozen=True)
class EscalationReason:
    """A reason that fired: its figure exceeds its threshold; ``detail`` says it in words."""

    reason: str
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class Escalation:
    """The call's escalation score in ``[0, 1]`` and the reasons that fired (strongest first)."""

    score: float
    reasons: list[EscalationReason]


@dataclass(frozen=True)
class CallAnalytics:
    """Everything :func:`analyse_call` finds; ``note`` says which figures one scored channel cannot give."""

    talk: TalkFigures
    turns: list[TurnScore]
    channels: list[ChannelFigures]
    escalation: Escalation
    note: str | None


def _labelled(segment: Segment) -> bool:
    return segment.label is not None and segment.label != UNCERTAIN_LABEL


def negative_share(segments: Sequence[Segment], negative: set[str], start_s: float = 0.0,
                   end_s: float = float("inf")) -> float | None:
    """Share of the labelled speech in ``[start_s, end_s)`` labelled with a ``negative`` label (None without any)."""
    labelled = negative_s = 0.0
    for segment in segments:
        length = min(segment.end_s, end_s) - max(segment.start_s, start_s)
        if length > 0 and _labelled(segment):
            labelled += length
            negative_s += length if segment.label in negative else 0.0
    return negative_s / labelled if labelled > 0 else None


def longest_negative_stretch(segments: Sequence[Segment], negative: set[str], gap_s: float) -> float:
    """Seconds of the longest run of negative segments (time order) joined across pauses, unscored
    or uncertain speech of at most ``gap_s``; another label ends a run."""
    best, start_s, last_end_s = 0.0, None, 0.0
    for segment in segments:
        if segment.label in negative:
            if start_s is None or segment.start_s - last_end_s > gap_s:
                start_s = segment.start_s
            last_end_s = segment.end_s
            best = max(best, last_end_s - start_s)
        elif _labelled(segment):
            start_s = None
    return best


def ending_negative_share(segments: Sequence[Segment], negative: set[str], last_s: float) -> float | None:
    """Negative share of the last ``last_s`` seconds of labelled speech in ``segments`` (time order)."""
    remaining, labelled, negative_s = last_s, 0.0, 0.0
    for segment in reversed([segment for segment in segments if _labelled(segment)]):
        take = min(segment.end_s - segment.start_s, remaining)
        labelled += take
        negative_s += take if segment.label in negative else 0.0
        remaining -= take
        if remaining <= 0:
            break
    return negative_s / labelled if labelled > 0 else None


def call_turns(scores: CallScores, config: CallScoringConfig) -> list[TurnScore]:
    """Every speech turn of every scored channel, channel by channel in time order (see :class:`TurnScore`)."""
    rate = scores.geometry.sample_rate
    several = len(scores.channels) > 1
    flags = interruption_turns([channel.regions for channel in scores.channels], rate, config.analytics)
    turns: list[TurnScore] = []
    for channel, interrupting in zip(scores.channels, flags):
        others = union_spans([other.regions for other in scores.channels if other is not channel])
        for index, (start, end) in enumerate(channel.regions.tolist()):
            low, high = np.searchsorted(channel.turns, [index, index + 1])
            label = confidence = mean = None
            if high > low:
                lengths = (channel.windows[low:high, 1] - channel.windows[low:high, 0]).astype(np.float64)
                mean = (channel.probabilities[low:high] * lengths[:, None]).sum(axis=0) / lengths.sum()
                best = int(np.argmax(mean))
                confidence = float(mean[best])
                label = UNCERTAIN_LABEL if confidence < config.summary.min_confidence else scores.labels[best]
                mean = mean.astype(np.float32)
            turns.append(TurnScore(
                channel.name, index, start / rate, end / rate, label, confidence, mean, int(high - low),
                covered_samples(start, end, others) / rate if several else None,
                bool(interrupting[index]) if several else None,
            ))
    return turns


def talk_figures(scores: CallScores, turns: Sequence[TurnScore]) -> TalkFigures:
    """:class:`TalkFigures` of a scored call whose turns are ``turns`` (:func:`call_turns`)."""
    rate = scores.geometry.sample_rate
    regions = [channel.regions for channel in scores.channels]
    n_samples = max((channel.n_samples for channel in scores.channels), default=0)
    talk = int((union_spans(regions) @ np.array([-1, 1])).sum()) if regions else 0
    several = len(regions) > 1
    gaps = reply_gaps(regions) / rate if several else np.zeros(0)
    return TalkFigures(
        talk_s=talk / rate,
        silence_s=max(0, n_samples - talk) / rate,
        overlap_s=float((overlap_spans(regions) @ np.array([-1, 1])).sum()) / rate if several else None,
        interruptions=sum(bool(turn.interruption) for turn in turns) if several else None,
        median_reply_gap_s=float(np.median(gaps)) if len(gaps) else None,
    )


def channel_figures(scores: CallScores, channel: ChannelScores, role: str, segments: Sequence[Segment],
                    turns: Sequence[TurnScore], config: CallScoringConfig) -> ChannelFigures:
    """:class:`ChannelFigures` of one scored channel, from its timeline ``segments`` and turns (time order)."""
    rate = scores.geometry.sample_rate
    lengths = (channel.regions[:, 1] - channel.regions[:, 0]) / rate
    total = sum(other.speech_samples for other in scores.channels)
    emotions = emotion_time(segments, scores.labels)
    negative = set(config.summary.negative_labels)
    third_s = scores.info.duration_s / 3
    ending = ending_negative_share(segments, negative, config.analytics.ended_negative_s)
    return ChannelFigures(
        channel=channel.name,
        role=role,
        talk_s=channel.speech_samples / rate,
        talk_share=channel.speech_samples / total if total > 0 else 0.0,
        turn_count=len(lengths),
        mean_turn_s=float(lengths.mean()) if len(lengths) else 0.0,
        longest_turn_s=float(lengths.max()) if len(lengths) else 0.0,
        interruptions=sum(bool(turn.interruption) for turn in turns) if len(scores.channels) > 1 else None,
        emotion_share=emotions.share,
        uncertain_s=emotions.uncertain_s,
        dominant_emotion=emotions.dominant,
        negative_share=negative_share(segments, negative),
        negative_share_first_third=negative_share(segments, negative, 0.0, third_s),
        negative_share_last_third=negative_share(segments, negative, 2 * third_s, float("inf")),
        longest_negative_s=longest_negative_stretch(segments, negative, config.summary.stretch_gap_s),
        ending_negative_share=ending,
        ended_negative=None if ending is None else ending > config.analytics.ended_negative_share,
    )


def _who(figures: ChannelFigures) -> str:
    if figures.role in ("customer", "agent"):
        return f"the {figures.role}"
    return "the mixed channels" if figures.channel == "mix" else f"the speaker on channel {figures.channel}"


def escalation(channels: Sequence[ChannelFigures], talk: TalkFigures, duration_s: float,
               config: EscalationConfig, analytics: AnalyticsConfig) -> Escalation:
    """The escalation score of a call and its reasons (:class:`~ser_udfs.calls.config.EscalationConfig`).

    The emotion reasons look at the channels whose role is in ``config.roles`` and take the worst
    of them; ``overlap`` and ``interruptions`` count 0 with one scored channel. A reason of weight
    0 is off: it is never listed.
    """
    watched = [figures for figures in channels if figures.role in config.roles]
    parts: list[tuple[float, float, float, str | None, str]] = []  # weight, value, threshold, reason, detail

    def worst(figure: Callable[[ChannelFigures], float | None]) -> ChannelFigures | None:
        scored = [figures for figures in watched if figure(figures) is not None]
        return max(scored, key=figure, default=None)

    sustained = worst(lambda f: f.longest_negative_s)
    parts.append((config.sustained_negative_weight, sustained.longest_negative_s if sustained else 0.0,
                  config.sustained_negative_s, "sustained_negative",
                  f"{_who(sustained)} stayed negative for {sustained.longest_negative_s:.0f} s in a row"
                  if sustained else ""))

    def rise(figures: ChannelFigures) -> float | None:
        first, last = figures.negative_share_first_third, figures.negative_share_last_third
        return None if first is None or last is None else last - first

    rising = worst(rise)
    parts.append((config.rising_negative_weight, rise(rising) if rising else 0.0, config.rising_negative,
                  "rising_negative",
                  f"{_who(rising)}'s negative share rose from {rising.negative_share_first_third:.0%} in the first "
                  f"third of the call to {rising.negative_share_last_third:.0%} in the last" if rising else ""))
    ended = worst(lambda f: f.ending_negative_share)
    parts.append((config.ended_negative_weight, ended.ending_negative_share if ended else 0.0,
                  analytics.ended_negative_share, "ended_negative",
                  f"{_who(ended)} ended negative: {ended.ending_negative_share:.0%} of the last "
                  f"{analytics.ended_negative_s:g} s of their speech" if ended else ""))
    overlap = (talk.overlap_s or 0.0) / talk.talk_s if talk.talk_s > 0 else 0.0
    parts.append((config.overlap_weight, overlap, config.overlap_share, "overlap",
                  f"both sides spoke at once for {talk.overlap_s or 0.0:.0f} s, {overlap:.0%} of the talk time"))
    per_min = (talk.interruptions or 0) / (duration_s / 60) if duration_s > 0 else 0.0
    parts.append((config.interruptions_weight, per_min, config.interruptions_per_min, "interruptions",
                  f"{talk.interruptions or 0} interruptions, {per_min:.1f} per minute"))
    weights = sum(weight for weight, *_ in parts)
    score = sum(weight * min(1.0, max(0.0, value) / threshold) for weight, value, threshold, *_ in parts) / weights
    reasons = [EscalationReason(reason, float(value), float(threshold), detail)
               for weight, value, threshold, reason, detail in sorted(parts, key=lambda p: -p[0] * min(1, p[1] / p[2]))
               if value > threshold and weight > 0]
    return Escalation(float(score), reasons)


def analyse_call(scores: CallScores, segments: Sequence[Segment], config: CallScoringConfig, *,
                 customer_channel: int) -> CallAnalytics:
    """Turns, talk, per-channel and escalation figures of a scored call and its timeline ``segments``.

    ``customer_channel`` (``channels.customer``) names the roles (:func:`channel_role`).
    """
    turns = call_turns(scores, config)
    talk = talk_figures(scores, turns)
    channels = [
        channel_figures(
            scores, channel, channel_role(channel.name, scores.info.channels, customer_channel),
            [segment for segment in segments if segment.channel == channel.name],
            [turn for turn in turns if turn.channel == channel.name], config,
        )
        for channel in scores.channels
    ]
    note = None
    if len(scores.channels) == 1:
        what = "the mix of all channels" if scores.channels[0].name == "mix" else (
            "a mono file" if scores.info.channels == 1 else f"channel {scores.channels[0].name} alone")
        note = (f"one scored channel ({what}): overlap, interruptions and reply gaps need two, and its talk share "
                "is 1; score a stereo file with --channels all for them")
    return CallAnalytics(talk, turns, channels, escalation(channels, talk, scores.info.duration_s, config.escalation,
                                                          config.analytics), note)

