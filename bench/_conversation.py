"""Stereo calls laid out from utterances, with their truth: turns, talk, overlaps, interruptions.

A call alternates between channel 0 and channel 1 (channel 0 first). Each turn is one or more
utterances of its channel said back to back (joined by pauses of ``join_s``, shorter than the
detector bridges, so they are one turn by the analytics' definition). What happens at and
inside a turn is drawn from the rng (:class:`Layout`):

- a **pause** before the next turn (``pause_s``), or
- an **overlap**: the next speaker starts ``o`` seconds (``overlap_s``) before the current turn
  ends. The current turn is made long enough to have lasted ``interruption_after_s + margin_s``
  when the next speaker comes in, and ``o < interruption_stop_s``, so every such turn change is
  an **interruption** in the sense of :func:`ser_udfs.calls.analytics.interruption_turns`; the
  interrupting turn outlasts the interrupted one by at least ``margin_s``;
- a **back-channel**: one utterance of the other channel ``lead_s`` into a long turn, which goes
  on for more than ``interruption_stop_s + margin_s`` after the back-channel starts and
  ``margin_s`` after it ends: an overlap that is not an interruption.

The truth is the speech actually placed: an utterance is its clip set to a speech level (its
loudest 10 ms frame at :data:`PEAK_DBFS`, so that the clip's speech lies above the line noise
whatever the level it was recorded at) and trimmed to where its speech is (:func:`trim_speech`:
an energy rule with two thresholds, which leaves out a breath or click before the speech), and
only the trimmed samples are placed. A true turn runs from the start of its first utterance to
the end of its last. Everything is in samples at the utterances' rate
(:attr:`CallTruth.sample_rate`); :meth:`CallTruth.turns_at` converts. :func:`mix_call` adds the
line noise and :func:`write_variant` writes a file (telephone band and µ-law at 8 kHz).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from ser_udfs.audio.preprocess import resample
from ser_udfs.calls.analytics import overlap_spans
from ser_udfs.calls.config import AnalyticsConfig
from ser_udfs.synthetic.calls import telephone_filter, write_call

#: Level of the white line noise on both channels, dBFS.
NOISE_DBFS = -60.0
#: Level of the loudest 10 ms frame of every utterance, dBFS (:func:`trim_speech`).
PEAK_DBFS = -20.0


@dataclass(frozen=True)
class Layout:
    """How a conversation is laid out (seconds; ``*_share``: probability per turn).

    Attributes
    ----------
    pause_s
        Range of the pause between two turns (and before the first and after the last).
    overlap_s
        Range of how long the next speaker overlaps the current one at an overlap turn change.
    join_s
        Range of the pause between two utterances of one turn.
    lead_s
        Range of how far into the host turn a back-channel starts.
    overlap_share, backchannel_share
        Chance that a turn ends in an overlap (an interruption), that it hosts a back-channel.
    long_turn_share
        Chance that a turn with neither holds two utterances instead of one.
    max_turn_utterances
        Most utterances in one turn (a turn that cannot host its design within it gets a pause
        and no back-channel instead).
    margin_s
        How far a design keeps from the thresholds it must meet or avoid.
    """

    pause_s: tuple[float, float] = (0.4, 1.5)
    overlap_s: tuple[float, float] = (1.0, 1.6)
    join_s: tuple[float, float] = (0.05, 0.15)
    lead_s: tuple[float, float] = (0.3, 0.8)
    overlap_share: float = 0.2
    backchannel_share: float = 0.15
    long_turn_share: float = 0.25
    max_turn_utterances: int = 4
    margin_s: float = 0.5


@dataclass(frozen=True)
class PlacedUtterance:
    """Utterance ``index`` of ``channel``'s list, placed at ``start`` for ``length`` samples, in ``turn``."""

    channel: int
    index: int
    start: int
    length: int
    turn: int


@dataclass(frozen=True)
class CallTruth:
    """What a laid-out call holds, in samples at ``sample_rate``.

    Attributes
    ----------
    turns
        int64 ``[n_c, 2]`` true turns of channel 0 and of channel 1 (sorted, apart).
    utterances
        Every placed utterance, in the order placed.
    overlaps
        int64 ``[m, 2]``: the designed overlaps, sorted (the same as
        :func:`~ser_udfs.calls.analytics.overlap_spans` of ``turns``).
    interruptions
        ``(channel, turn index)`` of each designed interruption.
    n_samples
        Length of the call.
    """

    sample_rate: int
    turns: tuple[np.ndarray, np.ndarray]
    utterances: tuple[PlacedUtterance, ...]
    overlaps: np.ndarray
    interruptions: tuple[tuple[int, int], ...]
    n_samples: int

    def turns_at(self, rate: int) -> list[np.ndarray]:
        """The true turns of each channel in samples at ``rate``: int64 ``[n_c, 2]`` each."""
        return [np.round(turns * (rate / self.sample_rate)).astype(np.int64) for turns in self.turns]

    @property
    def turns_s(self) -> list[np.ndarray]:
        """float64 ``[n_c, 2]``: ``(start_s, end_s)`` of each true turn, per channel."""
        return [turns / self.sample_rate for turns in self.turns]

    @property
    def talk_s(self) -> tuple[float, float]:
        """Seconds inside the true turns, per channel."""
        return tuple(float((turns[:, 1] - turns[:, 0]).sum()) / self.sample_rate for turns in self.turns)

    @property
    def overlap_s(self) -> float:
        """Seconds in which both channels speak, from the true turns."""
        spans = overlap_spans(list(self.turns))
        return float((spans[:, 1] - spans[:, 0]).sum()) / self.sample_rate


def trim_speech(samples: np.ndarray, sample_rate: int, *, body_db: float = 20.0, edge_db: float = 35.0,
                frame_s: float = 0.01, peak_dbfs: float | None = PEAK_DBFS) -> np.ndarray:
    """A clip ``[n]`` set to a speech level and trimmed to where its speech is.

    Frames of ``frame_s``, non-overlapping; the level of a frame is its mean square. The speech
    runs from the first to the last frame within ``body_db`` of the loudest frame, widened on
    each side over the frames next to it that stay within ``edge_db`` (soft onsets and decays);
    a sound before or after it that is not joined to it by such frames (a breath, a click) is
    left out. The clip is then scaled so that its loudest frame is at ``peak_dbfs`` (None: left
    as recorded).

    Returns
    -------
    float32 ``[m]``, ``m`` a whole number of frames (a last partial frame is dropped).

    Raises
    ------
    ValueError
        For a clip shorter than one frame or without any signal.
    """
    frame = max(1, int(round(frame_s * sample_rate)))
    n_frames = samples.size // frame
    if n_frames == 0:
        raise ValueError(f"a clip of {samples.size} samples is shorter than one {frame_s} s frame")
    frames = np.asarray(samples[: n_frames * frame], dtype=np.float64).reshape(n_frames, frame)
    power = (frames * frames).mean(axis=1)
    peak = power.max()
    if peak <= 0:
        raise ValueError("the clip holds no signal (all zeros)")
    body = np.flatnonzero(power >= peak * 10 ** (-body_db / 10))
    quiet = np.flatnonzero(power < peak * 10 ** (-edge_db / 10))
    before, after = quiet[quiet < body[0]], quiet[quiet > body[-1]]
    first = before[-1] + 1 if before.size else 0
    last = after[0] if after.size else n_frames
    gain = 1.0 if peak_dbfs is None else 10 ** (peak_dbfs / 20) / np.sqrt(peak)
    return (np.asarray(samples[first * frame : last * frame], dtype=np.float64) * gain).astype(np.float32)


def _cumulative(lengths: Sequence[int], join: int, limit: int) -> np.ndarray:
    """Lengths of turns of the first 1..``limit`` of ``lengths`` joined by ``join`` samples: ``[k]``."""
    head = np.asarray(lengths[:limit], dtype=np.int64)
    return np.cumsum(head) + join * np.arange(head.size)


def _utterances_for(lengths: Sequence[int], required: int, join: int, limit: int) -> int | None:
    """Fewest utterances of ``lengths`` (joined by at least ``join``) reaching ``required`` samples, or None."""
    reach = np.flatnonzero(_cumulative(lengths, join, limit) >= required)
    return int(reach[0]) + 1 if reach.size else None


def lay_out(lengths: tuple[Sequence[int], Sequence[int]], sample_rate: int, rng: np.random.Generator, *,
            layout: Layout = Layout(), analytics: AnalyticsConfig = AnalyticsConfig()) -> CallTruth:
    """Lay out a conversation of the utterances of channel 0 and channel 1 (see the module docstring).

    Utterances are used in the order given; the call ends when the channel whose turn is next
    has none left (the other channel's remaining utterances are not placed).

    Parameters
    ----------
    lengths
        Samples of each (trimmed) utterance of channel 0 and of channel 1, at ``sample_rate``.
    rng
        Draws the designs, pauses, joins, overlaps and leads.
    analytics
        The interruption thresholds the designs meet or avoid.

    Raises
    ------
    ValueError
        When ``layout.overlap_s`` reaches ``analytics.interruption_stop_s`` (an overlap turn change
        would not be an interruption).
    """
    if layout.overlap_s[1] >= analytics.interruption_stop_s:
        raise ValueError(f"overlaps up to {layout.overlap_s[1]} s are not interruptions with "
                         f"analytics.interruption_stop_s = {analytics.interruption_stop_s} s")

    def samples(seconds: float) -> int:
        return int(round(seconds * sample_rate))

    margin, min_join, min_pause = samples(layout.margin_s), samples(layout.join_s[0]), samples(layout.pause_s[0])
    after, stop = samples(analytics.interruption_after_s), samples(analytics.interruption_stop_s)
    left = [list(lengths[0]), list(lengths[1])]
    used = [0, 0]
    turns: list[list[tuple[int, int]]] = [[], []]
    placed: list[PlacedUtterance] = []
    overlaps: list[tuple[int, int]] = []
    interruptions: list[tuple[int, int]] = []
    limit = layout.max_turn_utterances
    channel, start, overlapped_by = 0, samples(rng.uniform(*layout.pause_s)), 0

    def place(number: int, count: int, at: int) -> int:
        """Place the next ``count`` utterances of channel ``number`` from ``at`` as one turn; its end."""
        position = at
        for position_in_turn in range(count):
            if position_in_turn:
                position += samples(rng.uniform(*layout.join_s))
            length = left[number].pop(0)
            placed.append(PlacedUtterance(number, used[number], position, length, len(turns[number])))
            used[number] += 1
            position += length
        turns[number].append((at, position))
        return position

    while left[channel]:
        other = 1 - channel
        backchannel_draw, overlap_draw, long_draw = rng.random(3)
        overlap, lead = samples(rng.uniform(*layout.overlap_s)), samples(rng.uniform(*layout.lead_s))
        base = 2 if long_draw < layout.long_turn_share else 1
        required = overlapped_by + margin if overlapped_by else 0
        hosts_backchannel = False
        if backchannel_draw < layout.backchannel_share and not overlapped_by and left[other]:
            host = lead + max(stop + margin, left[other][0] + margin)
            if _utterances_for(left[channel], max(required, host), min_join, limit):
                hosts_backchannel, required = True, max(required, host)
        ends_in_overlap = False
        if not hosts_backchannel and overlap_draw < layout.overlap_share and left[other]:
            needed = max(required, overlap + after + margin, overlapped_by + overlap + min_pause if overlapped_by else 0)
            if (_utterances_for(left[channel], needed, min_join, limit)
                    and _utterances_for(left[other], overlap + margin, min_join, limit)):
                ends_in_overlap, required = True, needed
        count = max(base, _utterances_for(left[channel], required, min_join, limit) or 1)
        end = place(channel, min(count, len(left[channel])), start)
        if hosts_backchannel:
            bc_end = place(other, 1, start + lead)
            overlaps.append((start + lead, bc_end))
        if ends_in_overlap:
            start, overlapped_by = end - overlap, overlap
            overlaps.append((start, end))
            interruptions.append((other, len(turns[other])))
        else:
            start, overlapped_by = end + samples(rng.uniform(*layout.pause_s)), 0
        channel = other
    ends = [end for channel_turns in turns for _, end in channel_turns]
    n_samples = max(ends, default=0) + samples(rng.uniform(*layout.pause_s))
    return CallTruth(
        sample_rate=sample_rate,
        turns=tuple(np.array(channel_turns, dtype=np.int64).reshape(-1, 2) for channel_turns in turns),
        utterances=tuple(placed),
        overlaps=np.array(sorted(overlaps), dtype=np.int64).reshape(-1, 2),
        interruptions=tuple(interruptions),
        n_samples=n_samples,
    )


def mix_call(truth: CallTruth, utterances: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
             rng: np.random.Generator, *, noise_dbfs: float = NOISE_DBFS) -> np.ndarray:
    """The call's two channels at ``truth.sample_rate``: float32 ``[2, truth.n_samples]``.

    ``utterances`` are the (trimmed) signals :func:`lay_out` was given the lengths of; white line
    noise at ``noise_dbfs`` (drawn from ``rng``) on both channels throughout.
    """
    call = (rng.standard_normal((2, truth.n_samples)) * 10 ** (noise_dbfs / 20)).astype(np.float32)
    for utterance in truth.utterances:
        samples = utterances[utterance.channel][utterance.index]
        if samples.size != utterance.length:
            raise ValueError(f"utterance {utterance.index} of channel {utterance.channel} has {samples.size} "
                             f"samples, the layout {utterance.length}")
        call[utterance.channel, utterance.start : utterance.start + utterance.length] += samples
    return call


def write_variant(path: str | Path, call: np.ndarray, source_rate: int, *, sample_rate: int, encoding: str) -> Path:
    """Write a mixed call ``[2, n]`` at ``sample_rate`` in ``encoding`` (:func:`ser_udfs.synthetic.calls.write_call`).

    At 8 kHz and below each channel goes through the telephone band (300–3400 Hz,
    :func:`ser_udfs.synthetic.calls.telephone_filter`) before resampling; above, it is only
    resampled (when the rates differ).
    """
    if sample_rate <= 8000:
        call = signal.sosfilt(telephone_filter(source_rate), call, axis=1).astype(np.float32)
    channels = [resample(channel, source_rate, sample_rate, quality="HQ") for channel in call]
    return write_call(path, np.clip(np.stack(channels), -1, 1), sample_rate, encoding=encoding)
