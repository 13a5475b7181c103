"""Speech detection: finds generated utterances, ignores silence, noise and clicks, and gives the
same regions whatever the block sizes it is fed."""

from __future__ import annotations

import numpy as np
import pytest

from ser_udfs.synthetic.speech import synth_utterance
from ser_udfs.audio.vad import SpeechDetector, VadConfig, detect_speech

RATE = 16000


def _noisy_call(placements: list[tuple[float, float]], *, duration_s: float, noise_dbfs: float = -60.0) -> np.ndarray:
    """White noise with utterances of length ``end - start`` written at ``start``."""
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal(int(duration_s * RATE)) * 10 ** (noise_dbfs / 20)).astype(np.float32)
    for index, (start_s, end_s) in enumerate(placements):
        utterance = synth_utterance("neutral", speaker_seed=3, utterance_seed=index, sample_rate=RATE, duration_s=end_s - start_s)
        start = int(start_s * RATE)
        audio[start : start + utterance.size] += utterance
    return audio


def test_finds_each_utterance_and_nothing_else() -> None:
    placements = [(1.0, 3.5), (6.0, 8.0), (12.0, 15.0)]
    regions = detect_speech(_noisy_call(placements, duration_s=17.0), RATE, VadConfig()) / RATE
    assert len(regions) == len(placements)
    for (start_s, end_s), (found_start, found_end) in zip(placements, regions):
        # utterances carry up to 0.25 s of their own leading and trailing silence
        assert start_s - 0.15 <= found_start <= start_s + 0.4
        assert end_s - 0.4 <= found_end <= end_s + 0.15


@pytest.mark.parametrize("noise_dbfs", [None, -70.0, -45.0])
def test_silence_and_steady_noise_are_not_speech(noise_dbfs: float | None) -> None:
    if noise_dbfs is None:
        audio = np.zeros(10 * RATE, dtype=np.float32)
    else:
        audio = _noisy_call([], duration_s=10.0, noise_dbfs=noise_dbfs)
    assert detect_speech(audio, RATE, VadConfig()).shape == (0, 2)


def test_a_short_click_is_not_speech() -> None:
    audio = _noisy_call([], duration_s=5.0)
    audio[2 * RATE : 2 * RATE + 800] += 0.5  # a 50 ms click
    assert detect_speech(audio, RATE, VadConfig()).shape == (0, 2)


def test_pauses_shorter_than_the_bridge_are_joined() -> None:
    audio = _noisy_call([], duration_s=6.0)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE).astype(np.float32)
    audio[RATE : 2 * RATE] += tone
    audio[int(2.2 * RATE) : int(3.2 * RATE)] += tone  # 0.2 s pause: bridged
    audio[int(4.0 * RATE) : int(5.0 * RATE)] += tone  # 0.8 s pause: a new region
    regions = detect_speech(audio, RATE, VadConfig(bridge_gap_s=0.3, pad_s=0.1)) / RATE
    np.testing.assert_allclose(regions, [[0.9, 3.3], [3.9, 5.1]], atol=0.021)


@pytest.mark.parametrize("block", [157, 320, 4001, 48_000])
def test_streaming_gives_the_same_regions_as_one_push(block: int) -> None:
    audio = _noisy_call([(0.5, 3.0), (3.4, 6.0), (9.0, 9.6), (11.0, 14.0)], duration_s=15.3)
    expected = detect_speech(audio, RATE, VadConfig())
    detector = SpeechDetector(VadConfig(), RATE)
    for start in range(0, audio.size, block):
        detector.push(audio[start : start + block])
    detector.finish()
    np.testing.assert_array_equal(np.array(detector.regions).reshape(-1, 2), expected)


def test_decisions_before_final_sample_never_change() -> None:
    audio = _noisy_call([(0.5, 3.0), (3.2, 9.5), (11.0, 11.6), (12.0, 14.5)], duration_s=15.0)
    mask = np.zeros(audio.size, dtype=bool)
    for start, end in detect_speech(audio, RATE, VadConfig()):
        mask[start:end] = True
    detector = SpeechDetector(VadConfig(), RATE)
    previous_final = 0
    for start in range(0, audio.size, 1000):
        detector.push(audio[start : start + 1000])
        final = detector.final_sample
        assert previous_final <= final <= start + 1000
        known = np.zeros(final, dtype=bool)
        for region_start, region_end in detector.regions:
            known[region_start:region_end] = True
        if detector.provisional_region is not None:
            known[detector.provisional_region[0] : detector.provisional_region[1]] = True
        np.testing.assert_array_equal(known, mask[:final])
        previous_final = final
    assert previous_final > 12 * RATE  # a long utterance does not hold decisions back


def test_padding_wider_than_half_the_bridge_is_refused() -> None:
    with pytest.raises(ValueError, match="pad_s"):
        VadConfig(bridge_gap_s=0.2, pad_s=0.15)


@pytest.mark.parametrize("method", ["webrtc", "silero"])
def test_the_model_methods_find_each_utterance_and_stream_exactly(method: str) -> None:
    placements = [(1.0, 3.5), (6.0, 8.0), (12.0, 15.0)]
    audio = _noisy_call(placements, duration_s=17.0)
    config = VadConfig(method=method)
    regions = detect_speech(audio, RATE, config)
    assert len(regions) == len(placements)
    for (start_s, end_s), (found_start, found_end) in zip(placements, regions / RATE):
        assert start_s - 0.15 <= found_start <= start_s + 0.4 and end_s - 0.4 <= found_end <= end_s + 0.15
    detector = SpeechDetector(config, RATE)
    for start in range(0, audio.size, 4001):
        detector.push(audio[start : start + 4001])
    detector.finish()
    np.testing.assert_array_equal(np.array(detector.regions).reshape(-1, 2), regions)


@pytest.mark.parametrize("method", ["webrtc", "silero"])
def test_behind_the_gate_silence_never_reaches_the_model(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ser_udfs.audio import vad

    asked: list[int] = []
    model_class = vad._WebRtcFrames if method == "webrtc" else vad._SileroFrames
    original = model_class.speech
    monkeypatch.setattr(model_class, "speech", lambda self, frames: asked.append(len(frames)) or original(self, frames))
    audio = _noisy_call([(2.0, 3.0)], duration_s=10.0, noise_dbfs=-70.0)
    detect_speech(audio, RATE, VadConfig(method=method))
    frame_s = 0.032 if method == "silero" else 0.02
    assert 0 < sum(asked) * frame_s < 1.5  # about the 1 s utterance, none of the 9 s of line noise
    asked.clear()
    detect_speech(audio, RATE, VadConfig(method=method, gate=False))
    assert sum(asked) * frame_s == pytest.approx(10.0, abs=0.05)


def test_a_method_that_cannot_run_at_the_rate_is_refused_in_one_sentence() -> None:
    from ser_udfs.audio.vad import check_detector
    from ser_udfs.errors import UserError

    with pytest.raises(UserError, match="silero works at 8 or 16 kHz, not 22050 Hz"):
        check_detector(VadConfig(method="silero"), 22050)
    with pytest.raises(ValueError, match="frame_s of 0.01, 0.02 or 0.03"):
        VadConfig(method="webrtc", frame_s=0.025)
