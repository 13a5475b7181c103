"""Call analytics on small hand-made calls, checked exactly: turns, talk, interruptions, reply
gaps, per-channel emotion figures, escalation."""

from __future__ import annotations

import numpy as np
import pytest

from ser_udfs.audio.decode import AudioInfo
from ser_udfs.calls.analytics import (
    analyse_call,
    call_turns,
    channel_number,
    channel_role,
    ending_negative_share,
    escalation,
    interruption_turns,
    longest_negative_stretch,
    negative_share,
    overlap_spans,
    reply_gaps,
    talk_figures,
    union_spans,
)
from ser_udfs.calls.config import AnalyticsConfig, CallScoringConfig, EscalationConfig, SummaryConfig
from ser_udfs.calls.stream import CallScores, ChannelScores, WindowGeometry
from ser_udfs.calls.timeline import UNCERTAIN_LABEL, Segment, call_timeline
from ser_udfs.settings import ConfigError, resolve_config
from ser_udfs.spark.score import ScoreJobConfig
from tests.builders import CALL_LABELS, two_turn_channel

NEGATIVE = {"angry", "sad"}
RATE = 10  # samples per second of the hand-made calls


def _spans(*pairs: tuple[float, float]) -> np.ndarray:
    return (np.array(pairs, dtype=float).reshape(-1, 2) * RATE).astype(np.int64)


def _segment(start_s: float, end_s: float, label: str | None, channel: str = "1") -> Segment:
    return Segment(channel, start_s, end_s, label is not None, label, None if label is None else 0.9, None, 0)


def _silent_channel(name: str, regions: np.ndarray, n_samples: int = 100) -> ChannelScores:
    return ChannelScores(name=name, n_samples=n_samples, regions=regions, windows=np.zeros((0, 2), np.int64),
                         turns=np.zeros(0, np.int64), probabilities=np.zeros((0, 2), np.float32))


def test_turns_take_their_windows_mean_and_the_other_channels_overlap() -> None:
    geometry, first = two_turn_channel()  # channel "1": turns 1-5.5 s (two windows) and 8-9 s (none)
    other = ChannelScores(name="0", n_samples=100, regions=np.array([[50, 85]]), windows=np.array([[50, 80]]),
                          turns=np.array([0]), probabilities=np.array([[0.3, 0.7]], dtype=np.float32))
    scores = CallScores(AudioInfo(10, 2, 100, "PCM_16"), geometry, CALL_LABELS, [first, other])
    turns = call_turns(scores, CallScoringConfig())
    assert [(t.channel, t.turn, t.start_s, t.end_s, t.windows, t.label) for t in turns] == [
        ("1", 0, 1.0, 5.5, 2, "angry"), ("1", 1, 8.0, 9.0, 0, None), ("0", 0, 5.0, 8.5, 1, "sad"),
    ]
    np.testing.assert_allclose(turns[0].probabilities, [0.55, 0.45], atol=1e-6)  # two 3 s windows, equal weight
    assert [t.overlap_s for t in turns] == pytest.approx([0.5, 0.5, 1.0])
    # channel 0 starts at 5 s while channel 1 has spoken 4 s and stops 0.5 s later: an interruption;
    # so is channel 1's second turn, at 8 s, 3 s into channel 0's, which stops 0.5 s later
    assert [t.interruption for t in turns] == [False, True, True]
    assert turns[1].probabilities is None and turns[1].confidence is None
    uncertain = CallScoringConfig(summary=SummaryConfig(min_confidence=0.6))
    assert [t.label for t in call_turns(scores, uncertain)] == [UNCERTAIN_LABEL, None, "sad"]
    alone = call_turns(CallScores(AudioInfo(10, 1, 100, "PCM_16"), geometry, CALL_LABELS, [other]), CallScoringConfig())
    assert alone[0].overlap_s is None and alone[0].interruption is None  # one channel: nothing to compare with


def test_talk_figures_count_talk_silence_overlap_interruptions_and_reply_gaps() -> None:
    geometry, first = two_turn_channel()  # channel "1": turns 1-5.5 s and 8-9 s of a 10 s call
    other = _silent_channel("0", np.array([[50, 85]]))
    scores = CallScores(AudioInfo(10, 2, 100, "PCM_16"), geometry, CALL_LABELS, [first, other])
    talk = talk_figures(scores, call_turns(scores, CallScoringConfig()))
    # someone speaks 1-9 s: 8 s of talk, 2 s of silence; both speak 5-5.5 s and 8-8.5 s
    assert (talk.talk_s, talk.silence_s, talk.overlap_s) == pytest.approx((8.0, 2.0, 1.0))
    assert talk.interruptions == 2
    assert talk.median_reply_gap_s is None  # each start falls inside the other's speech: no reply
    alone = CallScores(AudioInfo(10, 1, 100, "PCM_16"), geometry, CALL_LABELS, [first])
    single = talk_figures(alone, call_turns(alone, CallScoringConfig()))
    assert (single.overlap_s, single.interruptions, single.median_reply_gap_s) == (None, None, None)
    assert single.silence_s == pytest.approx(4.5) and single.talk_s == pytest.approx(5.5)


def test_spans_union_and_overlap() -> None:
    a, b = _spans((0, 2), (3, 5)), _spans((1, 4), (4.5, 6))
    np.testing.assert_array_equal(union_spans([a, b]), _spans((0, 6)))
    np.testing.assert_array_equal(overlap_spans([a, b]), _spans((1, 2), (3, 4), (4.5, 5)))
    np.testing.assert_array_equal(overlap_spans([_spans((0, 1)), _spans((1, 2))]), np.zeros((0, 2)))  # touching
    three = overlap_spans([_spans((0, 3)), _spans((1, 2)), _spans((1.5, 4))])
    np.testing.assert_array_equal(three, _spans((1, 3)))


@pytest.mark.parametrize(
    ("agent", "customer_start_s", "expected"),
    [
        ((0, 5), 4.0, True),    # agent spoke 4 s and stops 1 s after the customer starts
        ((0, 5), 0.5, False),   # agent had only spoken 0.5 s
        ((0, 9), 4.0, False),   # agent goes on 5 s more: talking over, not taking the turn
        ((0, 3), 4.0, False),   # agent had stopped: a reply
    ],
)
def test_an_interruption_takes_a_held_turn_that_stops_soon(agent, customer_start_s, expected) -> None:
    customer = _spans((customer_start_s, customer_start_s + 2))
    flags = interruption_turns([_spans(agent), customer], RATE, AnalyticsConfig(interruption_after_s=1.0,
                                                                                interruption_stop_s=2.0))
    assert flags[1].tolist() == [expected] and flags[0].tolist() == [False]


def test_reply_gaps_follow_changes_of_speaker() -> None:
    agent = _spans((0, 2), (4.2, 5), (5.5, 6))
    customer = _spans((2.5, 4), (5.8, 7))
    # 2.0 → 2.5 customer replies (0.5 s); 4.0 → 4.2 agent replies (0.2 s); 5.5 is the agent going
    # on after its own turn; 5.8 starts while the agent speaks: an overlap, not a reply
    assert (reply_gaps([agent, customer]) / RATE).tolist() == pytest.approx([0.5, 0.2])
    assert reply_gaps([agent]).tolist() == []


def test_negative_figures_of_a_channel() -> None:
    segments = [
        _segment(0, 2, "neutral"), _segment(2, 3, None), _segment(3, 6, "angry"), _segment(6, 7.5, None),
        _segment(7.5, 9, "sad"), _segment(9, 12, "neutral"), _segment(12, 15, "angry"),
        _segment(15, 16, UNCERTAIN_LABEL),
    ]
    # labelled speech: neutral 5 s, angry 6 s, sad 1.5 s (uncertain and unscored left out)
    assert negative_share(segments, NEGATIVE) == pytest.approx(7.5 / 12.5)
    assert negative_share(segments, NEGATIVE, 0, 5) == pytest.approx(2 / 4)  # neutral 0-2, angry 3-5
    assert negative_share(segments, NEGATIVE, 15, 20) is None
    # angry 3-6 and sad 7.5-9 join across the 1.5 s pause; neutral at 9 s ends the stretch
    assert longest_negative_stretch(segments, NEGATIVE, gap_s=2.0) == pytest.approx(6.0)
    assert longest_negative_stretch(segments, NEGATIVE, gap_s=1.0) == pytest.approx(3.0)
    # the last 4 s of labelled speech: angry 12-15 (3 s) and neutral 11-12 (1 s)
    assert ending_negative_share(segments, NEGATIVE, 4.0) == pytest.approx(0.75)
    assert ending_negative_share([_segment(0, 1, None)], NEGATIVE, 4.0) is None


def _labelled_channel(name: str, spans_labels: list[tuple[float, float, int]], n_samples: int) -> ChannelScores:
    """A channel whose turns are each one window of ``CALL_LABELS[label]`` with probability 0.9."""
    regions = _spans(*[(start, end) for start, end, _ in spans_labels])
    probabilities = np.array([[0.9, 0.1] if label == 0 else [0.1, 0.9] for *_, label in spans_labels], np.float32)
    return ChannelScores(name=name, n_samples=n_samples, regions=regions, windows=regions.copy(),
                         turns=np.arange(len(regions)), probabilities=probabilities)


LABELS = ("angry", "neutral")


def _call(channels: list[ChannelScores], n_channels: int = 2, duration_samples: int = 600) -> CallScores:
    geometry = WindowGeometry(sample_rate=RATE, window_samples=30, hop_samples=15, min_speech_samples=5)
    return CallScores(AudioInfo(RATE, n_channels, duration_samples, "PCM_16"), geometry, LABELS, channels)


CONFIG = CallScoringConfig(summary=SummaryConfig(negative_labels=("angry",)))


def test_a_customer_who_gets_angry_and_ends_angry_is_escalated_with_reasons() -> None:
    # a 60 s call: the customer (channel 1) is calm in the first third and angry from 30 s to the end
    agent = _labelled_channel("0", [(0, 5, 1), (12, 17, 1), (24, 29, 1)], 600)
    customer = _labelled_channel("1", [(6, 11, 1), (18, 23, 1), (30, 44, 0), (45, 59, 0)], 600)
    scores = _call([agent, customer])
    segments, _ = call_timeline(scores, CONFIG)
    analytics = analyse_call(scores, segments, CONFIG, customer_channel=1)
    by_role = {figures.role: figures for figures in analytics.channels}
    assert set(by_role) == {"agent", "customer"}
    customer_figures = by_role["customer"]
    assert customer_figures.talk_s == pytest.approx(38.0) and customer_figures.turn_count == 4
    assert customer_figures.negative_share_first_third == 0.0
    assert customer_figures.negative_share_last_third == pytest.approx(1.0)
    assert customer_figures.longest_negative_s == pytest.approx(29.0)  # 30-59 s across a 1 s pause
    assert customer_figures.ended_negative is True and by_role["agent"].ended_negative is False
    assert customer_figures.emotion_share == pytest.approx({"angry": 28 / 38, "neutral": 10 / 38})
    reasons = {reason.reason for reason in analytics.escalation.reasons}
    assert reasons == {"sustained_negative", "rising_negative", "ended_negative"}
    assert analytics.escalation.score == pytest.approx(0.75)  # the three emotion reasons, weights 0.3+0.2+0.25
    assert all("the customer" in reason.detail for reason in analytics.escalation.reasons)
    assert analytics.note is None
    # the same call with the agent angry instead: the customer's role is what the score watches
    calm = analyse_call(_call([customer, agent]), call_timeline(_call([customer, agent]), CONFIG)[0], CONFIG,
                        customer_channel=0)
    assert calm.escalation.reasons == [] and calm.escalation.score < 0.1


def test_escalation_weights_and_thresholds_come_from_the_config() -> None:
    agent = _labelled_channel("0", [(0, 10, 1), (14, 30, 1)], 600)
    # the customer starts 9 s into the agent's first turn, which stops at 10 s; the agent comes back
    # at 14 s over the customer, who goes on 3 s more (longer than interruption_stop_s)
    customer = _labelled_channel("1", [(9, 17, 1)], 600)
    scores = _call([agent, customer])
    segments, _ = call_timeline(scores, CONFIG)
    only_interruptions = EscalationConfig(
        interruptions_per_min=0.5, sustained_negative_weight=0, rising_negative_weight=0, ended_negative_weight=0,
        overlap_weight=0, interruptions_weight=1,
    )
    config = CallScoringConfig(summary=CONFIG.summary, escalation=only_interruptions)
    analytics = analyse_call(scores, segments, config, customer_channel=1)
    assert analytics.talk.interruptions == 1 and analytics.talk.overlap_s == pytest.approx(4.0)  # 9-10, 14-17
    assert analytics.talk.median_reply_gap_s is None
    # one interruption in a 60 s call: 1 per minute, over a 0.5 threshold → capped at 1
    assert analytics.escalation.score == pytest.approx(1.0)
    assert [reason.reason for reason in analytics.escalation.reasons] == ["interruptions"]
    assert analytics.escalation.reasons[0].value == pytest.approx(1.0)
    halved = CallScoringConfig(summary=CONFIG.summary, escalation=EscalationConfig(
        interruptions_per_min=2.0, sustained_negative_weight=0, rising_negative_weight=0, ended_negative_weight=0,
        overlap_weight=0, interruptions_weight=1))
    graded = analyse_call(scores, segments, halved, customer_channel=1).escalation
    assert graded.score == pytest.approx(0.5) and graded.reasons == []  # under its threshold: no reason


def test_escalation_of_no_channels_is_zero() -> None:
    from ser_udfs.calls.analytics import TalkFigures

    nothing = escalation([], TalkFigures(0.0, 60.0, None, None, None), 60.0, EscalationConfig(), AnalyticsConfig())
    assert (nothing.score, nothing.reasons) == (0.0, [])


def test_one_scored_channel_says_what_it_cannot_give() -> None:
    mono = _labelled_channel("0", [(1, 5, 0)], 100)
    scores = _call([mono], n_channels=1, duration_samples=100)
    analytics = analyse_call(scores, call_timeline(scores, CONFIG)[0], CONFIG, customer_channel=1)
    assert analytics.channels[0].role == "unknown" and analytics.channels[0].talk_share == 1.0
    assert analytics.channels[0].interruptions is None
    assert "mono file" in analytics.note and "overlap" in analytics.note
    mix = ChannelScores("mix", 100, mono.regions, mono.windows, mono.turns, mono.probabilities)
    mixed = _call([mix], n_channels=2, duration_samples=100)
    assert "mix of all channels" in analyse_call(mixed, call_timeline(mixed, CONFIG)[0], CONFIG, customer_channel=1).note


def test_channel_numbers_and_roles() -> None:
    assert [channel_number(name) for name in ("0", "1", "mix")] == [0, 1, -1]
    assert [channel_role(name, 2, 1) for name in ("0", "1", "mix")] == ["agent", "customer", "unknown"]
    assert channel_role("0", 1, 1) == "unknown" and channel_role("2", 3, 1) == "unknown"


@pytest.mark.parametrize("override", [
    "analytics.ended_negative_share=1.5", "analytics.interruption_after_s=-1", "escalation.overlap_share=0",
    'escalation.roles=["boss"]', "escalation.overlap_weight=-0.1",
])
def test_bad_analytics_settings_are_refused(override: str) -> None:
    from jobs._cli import CONF_DIR

    with pytest.raises(ConfigError):
        resolve_config(ScoreJobConfig, CONF_DIR / "score.toml", [override])
