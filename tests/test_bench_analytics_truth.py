"""The call builder with truth (``bench/_conversation.py``) and a tiny run of ``bench/analytics_truth.py``.

Small designed layouts whose truth is worked out by hand; tone bursts and synthetic speech; no
shared data, no model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import analytics_truth
from bench._conversation import Layout, lay_out, mix_call, trim_speech, write_variant
from ser_udfs.calls.analytics import interruption_turns, overlap_spans
from ser_udfs.calls.config import AnalyticsConfig
from ser_udfs.synthetic.speech import synth_utterance

RATE = 8000
ANALYTICS = AnalyticsConfig(interruption_after_s=1.0, interruption_stop_s=2.0)
#: Every range degenerate and no design drawn: only what a test switches on happens.
FIXED = Layout(pause_s=(0.5, 0.5), overlap_s=(1.0, 1.0), join_s=(0.1, 0.1), lead_s=(1.2, 1.2), overlap_share=0.0,
               backchannel_share=0.0, long_turn_share=0.0, margin_s=0.5)


def seconds(*values: float) -> list[int]:
    return [int(round(value * RATE)) for value in values]


def spans(*pairs: tuple[float, float]) -> np.ndarray:
    return np.array([seconds(*pair) for pair in pairs], dtype=np.int64).reshape(-1, 2)


def test_trim_keeps_the_speech_and_its_soft_edges_not_a_breath_before_it() -> None:
    frame = RATE // 100
    level = np.full(100, 1e-4)  # 1 s of 10 ms frames, -80 dB under the tone
    level[10:15] = 0.05  # a "breath" at -26 dB, apart from the speech
    level[40:42] = 0.1  # a soft onset at -20 dB, joined to the speech
    level[42:80] = 1.0
    level[80:83] = 0.03  # a soft decay at -30 dB
    tone = np.sin(2 * np.pi * 440 * np.arange(100 * frame) / RATE) * np.repeat(level, frame) * 0.5
    trimmed = trim_speech(tone.astype(np.float32), RATE, peak_dbfs=None)
    np.testing.assert_array_equal(trimmed, tone[40 * frame : 83 * frame].astype(np.float32))
    scaled = trim_speech(tone.astype(np.float32), RATE, peak_dbfs=-20.0)
    loudest = (scaled[: scaled.size // frame * frame].reshape(-1, frame).astype(np.float64) ** 2).mean(axis=1).max()
    assert 10 * np.log10(loudest) == pytest.approx(-20.0, abs=1e-4)
    with pytest.raises(ValueError, match="no signal"):
        trim_speech(np.zeros(RATE, dtype=np.float32), RATE)


def test_pauses_only_give_alternating_turns_of_the_utterances() -> None:
    truth = lay_out((seconds(1.0, 1.5), seconds(2.0)), RATE, np.random.default_rng(0), layout=FIXED,
                    analytics=ANALYTICS)
    np.testing.assert_array_equal(truth.turns[0], spans((0.5, 1.5), (4.5, 6.0)))
    np.testing.assert_array_equal(truth.turns[1], spans((2.0, 4.0)))
    assert truth.talk_s == (2.5, 2.0)
    assert truth.overlap_s == 0.0 and len(truth.overlaps) == 0 and truth.interruptions == ()
    assert truth.n_samples == seconds(6.5)[0]
    np.testing.assert_allclose(truth.turns_s[0], [[0.5, 1.5], [4.5, 6.0]])
    np.testing.assert_array_equal(truth.turns_at(16000)[1], [[32000, 64000]])


def test_an_overlapping_turn_change_is_the_designed_interruption() -> None:
    layout = Layout(**{**FIXED.__dict__, "overlap_share": 1.0})
    truth = lay_out((seconds(3.0, 1.0), seconds(2.0)), RATE, np.random.default_rng(0), layout=layout,
                    analytics=ANALYTICS)
    # channel 0 speaks 0.5-3.5; channel 1 comes in 1 s before it ends (after 2 s of it) and outlasts it;
    # channel 1's one utterance is too short to be interrupted in turn, so a pause follows
    np.testing.assert_array_equal(truth.turns[0], spans((0.5, 3.5), (5.0, 6.0)))
    np.testing.assert_array_equal(truth.turns[1], spans((2.5, 4.5)))
    np.testing.assert_array_equal(truth.overlaps, spans((2.5, 3.5)))
    assert truth.talk_s == (4.0, 2.0) and truth.overlap_s == 1.0
    assert truth.interruptions == ((1, 0),)
    flags = interruption_turns(list(truth.turns), RATE, ANALYTICS)
    assert [flag.tolist() for flag in flags] == [[False, False], [True]]


def test_a_back_channel_overlaps_without_interrupting() -> None:
    layout = Layout(**{**FIXED.__dict__, "backchannel_share": 1.0})
    truth = lay_out((seconds(4.0), seconds(1.2, 1.5)), RATE, np.random.default_rng(0), layout=layout,
                    analytics=ANALYTICS)
    # 1.2 s into channel 0's turn (it has spoken long enough), but channel 0 goes on 2.8 s > 2 s after
    np.testing.assert_array_equal(truth.turns[0], spans((0.5, 4.5)))
    np.testing.assert_array_equal(truth.turns[1], spans((1.7, 2.9), (5.0, 6.5)))
    np.testing.assert_array_equal(truth.overlaps, spans((1.7, 2.9)))
    assert truth.overlap_s == pytest.approx(1.2) and truth.interruptions == ()
    assert not any(flag.any() for flag in interruption_turns(list(truth.turns), RATE, ANALYTICS))
    assert [(u.channel, u.index, u.turn) for u in truth.utterances] == [(0, 0, 0), (1, 0, 0), (1, 1, 1)]


def test_a_long_turn_joins_its_utterances() -> None:
    layout = Layout(**{**FIXED.__dict__, "long_turn_share": 1.0})
    truth = lay_out((seconds(1.0, 0.8), seconds(1.0)), RATE, np.random.default_rng(0), layout=layout,
                    analytics=ANALYTICS)
    np.testing.assert_array_equal(truth.turns[0], spans((0.5, 2.4)))  # 1.0 + 0.1 join + 0.8
    np.testing.assert_array_equal(truth.turns[1], spans((2.9, 3.9)))
    assert truth.talk_s == pytest.approx((1.9, 1.0))


@pytest.mark.parametrize("seed", range(5))
def test_drawn_layouts_keep_their_designs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = tuple(list(rng.integers(seconds(0.8)[0], seconds(2.5)[0], size=20)) for _ in range(2))
    truth = lay_out(lengths, RATE, np.random.default_rng(seed), analytics=ANALYTICS)
    for turns in truth.turns:
        assert (turns[:, 1] > turns[:, 0]).all() and (turns[1:, 0] > turns[:-1, 1]).all()
    np.testing.assert_array_equal(truth.overlaps, overlap_spans(list(truth.turns)))
    flagged = {(channel, int(index)) for channel, flags in enumerate(interruption_turns(list(truth.turns), RATE, ANALYTICS))
               for index in np.flatnonzero(flags)}
    assert flagged == set(truth.interruptions) and truth.interruptions
    assert (truth.overlaps[:, 1] - truth.overlaps[:, 0]).min() >= seconds(0.8)[0]
    for utterance in truth.utterances:
        start, end = truth.turns[utterance.channel][utterance.turn]
        assert start <= utterance.start and utterance.start + utterance.length <= end


def test_mix_places_the_trimmed_samples_where_the_truth_says(tmp_path: Path) -> None:
    utterances = tuple([trim_speech(synth_utterance("neutral", speaker_seed=side, utterance_seed=k, sample_rate=16000,
                                                    duration_s=1.5), 16000) for k in range(2)] for side in (0, 1))
    truth = lay_out(tuple([u.size for u in channel] for channel in utterances), 16000, np.random.default_rng(1),
                    analytics=ANALYTICS)
    call = mix_call(truth, utterances, np.random.default_rng(2), noise_dbfs=float("-inf"))
    assert call.shape == (2, truth.n_samples)
    for placed in truth.utterances:
        np.testing.assert_array_equal(call[placed.channel, placed.start : placed.start + placed.length],
                                      utterances[placed.channel][placed.index])
    assert np.abs(call).sum() == pytest.approx(sum(np.abs(u).sum() for channel in utterances for u in channel), rel=1e-5)
    path = write_variant(tmp_path / "call.wav", call, 16000, sample_rate=8000, encoding="ulaw")
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "ULAW")
    assert info.frames == pytest.approx(truth.n_samples / 2, abs=2)


def test_bench_runs_on_tiny_synthetic_calls_and_prints_its_summary(tmp_path: Path, capsys) -> None:
    argv = ["--data", str(tmp_path / "absent"), "--calls", "2", "--utterances", "8", "--work-dir", str(tmp_path / "work")]
    assert analytics_truth.main(argv) == 0
    printed = capsys.readouterr().out
    assert "synthetic utterances (synth_utterance): no RAVDESS clips under" in printed
    assert "command: `python bench/analytics_truth.py --data" in printed
    assert "### 8 kHz µ-law, telephone band: true / measured" in printed and "### 16 kHz PCM16: true / measured" in printed
    assert "| all 2 calls |" in printed
    summary = printed[printed.index("## Summary"):]
    for target in ("talk time within 10% per channel", "turn count within 10% per channel",
                   "total overlap within 25%", "every designed overlap >= 1 s found"):
        assert summary.count(target) == 2, summary
    assert summary.count("[PASS]") + summary.count("[MISS]") == 8
    assert summary.count("interruptions recall") == 2
    assert len(list((tmp_path / "work").glob("call*.wav"))) == 4


def test_the_vad_bench_runs_on_synthetic_calls_and_prints_every_method(tmp_path: Path, capsys) -> None:
    from bench import vad_accuracy

    argv = ["--data", str(tmp_path / "no-data"), "--calls", "1", "--utterances", "6", "--noises", "white", "telephone",
            "--snr-db", "20", "--methods", "energy", "webrtc", "--work-dir", str(tmp_path / "work")]
    assert vad_accuracy.main(argv) == 0
    printed = capsys.readouterr().out
    assert "synthetic utterances" in printed
    rows = [line for line in printed.splitlines() if line.startswith(("| energy |", "| webrtc |"))]
    assert len(rows) == 2 * 2 + 2  # method x noise, then one summary row per method
    f1 = [float(row.split("|")[6]) for row in rows[:4]]
    assert all(0.5 < value <= 1.0 for value in f1), printed  # clean synthetic speech at 20 dB: found


def test_frame_masks_and_babble() -> None:
    from bench.vad_accuracy import babble, frame_mask

    mask = frame_mask(np.array([[0, 1600], [3200, 4000]]), 16000, 30)  # 10 ms frames
    assert mask[:10].all() and not mask[10:20].any() and mask[20:25].all() and not mask[25:].any()
    voices = [np.ones(3), 2 * np.ones(5)]
    mixed = babble(voices, 11, np.random.default_rng(0))
    np.testing.assert_allclose(mixed, 3.0)
