"""Scoring calls without Spark: channels scored apart, telephone encodings, silent and short
calls, bad files, streaming against whole-file decoding and the training path, timelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_udfs.audio.decode import AudioInfo, decode_audio
from ser_udfs.calls.config import (
    AdaptationConfig,
    CallScoringConfig,
    SmoothingConfig,
    StreamConfig,
    SummaryConfig,
    WindowConfig,
)
from ser_udfs.calls.stream import (
    CallScores,
    ChannelScores,
    WindowGeometry,
    channel_plan,
    parse_channels,
    predict_windows,
    score_call,
    speech_turns,
    turn_windows,
    window_batch,
    window_geometry,
)
from ser_udfs.calls.timeline import (
    UNCERTAIN_LABEL,
    Segment,
    call_timeline,
    channel_segments,
    negative_stretches,
    smooth_probabilities,
)
from ser_udfs.errors import ClipError, UserError
from ser_udfs.features.config import AudioConfig, FeatureConfig
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.audio.preprocess import condition_clip, to_mono_target_rate
from ser_udfs.synthetic.calls import Turn, synth_call, write_call, write_demo_call
from tests.builders import (
    CALL_LABELS,
    STEREO_TURNS,
    adaptive_call_bundles,
    call_bundle,
    turn_label,
    two_speaker_call,
    two_turn_channel,
    two_speaker_turns,
)

@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    from training.inference import load_call_model

    return load_call_model(call_bundle(tmp_path_factory.mktemp("bundle") / "tiny-logreg"))


@pytest.fixture(scope="module")
def stereo_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    call = synth_call(STEREO_TURNS, duration_s=18.0, channels=2, sample_rate=8000, seed=1)
    return write_call(tmp_path_factory.mktemp("calls") / "stereo.wav", call, 8000, encoding="ulaw")


def _speech_turn_overlap(channel: ChannelScores, turns: list[Turn], rate: int) -> float:
    """Share of detected speech that lies inside the channel's turns."""
    inside = 0
    for start, end in channel.regions.tolist():
        for turn in turns:
            inside += max(0, min(end, turn.end_s * rate) - max(start, turn.start_s * rate))
    return inside / max(1, channel.speech_samples)


def test_each_channel_is_scored_on_its_own(bundle, stereo_call: Path) -> None:
    config = CallScoringConfig()
    scores = score_call(stereo_call, bundle, config)
    assert [channel.name for channel in scores.channels] == ["0", "1"]
    for channel, expected in zip(scores.channels, ("angry", "sad")):
        turns = [turn for turn in STEREO_TURNS if str(turn.channel) == channel.name]
        assert len(channel.regions) == len(turns)
        assert _speech_turn_overlap(channel, turns, 16000) > 0.95
        assert channel.speech_samples > 0.6 * sum(t.end_s - t.start_s for t in turns) * 16000
        predicted = [CALL_LABELS[index] for index in channel.probabilities.argmax(axis=1)]
        assert predicted.count(expected) >= 0.8 * len(predicted)
    segments, summary = call_timeline(scores, config)
    for name in ("0", "1"):
        own = [segment for segment in segments if segment.channel == name]
        assert own[0].start_s == 0.0 and own[-1].end_s == pytest.approx(18.0)
        assert all(a.end_s == b.start_s for a, b in zip(own, own[1:]))
    assert summary.status == "ok"
    assert summary.dominant_emotion in CALL_LABELS
    assert set(summary.speech_s) == {"0", "1"}
    assert sum(summary.emotion_share.values()) == pytest.approx(1.0)
    assert {stretch.channel for stretch in summary.negative_stretches} <= {"0", "1"}


def test_one_channel_and_the_mix(bundle, stereo_call: Path) -> None:
    customer = score_call(stereo_call, bundle, CallScoringConfig(), channels=parse_channels("customer", customer_channel=1))
    assert [channel.name for channel in customer.channels] == ["1"]
    mixed = score_call(stereo_call, bundle, CallScoringConfig(), channels="mix")
    assert [channel.name for channel in mixed.channels] == ["mix"]
    assert len(mixed.channels[0].regions) == len(STEREO_TURNS)


@pytest.mark.parametrize("encoding", ["ulaw", "alaw", "pcm16", "gsm"])
def test_telephone_encodings_round_trip_and_score_alike(bundle, tmp_path: Path, encoding: str) -> None:
    turns = [Turn(0, 1.0, 4.0, "angry"), Turn(0, 6.0, 9.0, "sad")]
    call = synth_call(turns, duration_s=10.0, channels=1, sample_rate=8000, seed=2)
    path = write_call(tmp_path / f"call.{encoding}.wav", call, 8000, encoding=encoding)
    decoded, info = decode_audio(path)
    assert (info.sample_rate, info.channels, decoded.shape[1]) == (8000, 1, call.shape[1])
    tolerance = {"ulaw": 0.02, "alaw": 0.02, "pcm16": 1e-4, "gsm": 0.2}[encoding]
    assert np.abs(decoded - call).max() < tolerance
    reference = score_call(write_call(tmp_path / "float.wav", call, 8000, encoding="float"), bundle, CallScoringConfig())
    scores = score_call(path, bundle, CallScoringConfig())
    np.testing.assert_allclose(scores.channels[0].regions, reference.channels[0].regions, atol=0.1 * 16000)
    labels = scores.channels[0].probabilities.argmax(axis=1)
    reference_labels = reference.channels[0].probabilities.argmax(axis=1)
    if len(labels) == len(reference_labels):
        assert np.mean(labels == reference_labels) >= 0.75


def test_16k_and_8k_versions_of_a_call_find_the_same_speech(bundle, tmp_path: Path) -> None:
    turns = [Turn(0, 1.0, 4.0, "angry"), Turn(0, 6.0, 9.0, "sad")]
    narrow = synth_call(turns, duration_s=10.0, channels=1, sample_rate=8000, seed=4)
    wide = synth_call(turns, duration_s=10.0, channels=1, sample_rate=16000, seed=4)
    scores_8k = score_call(write_call(tmp_path / "a.wav", narrow, 8000), bundle, CallScoringConfig())
    scores_16k = score_call(write_call(tmp_path / "b.flac", wide, 16000, encoding="flac"), bundle, CallScoringConfig())
    np.testing.assert_allclose(scores_8k.channels[0].regions, scores_16k.channels[0].regions, atol=0.1 * 16000)


def test_a_silent_call_has_no_speech_and_one_silent_segment_per_channel(bundle, tmp_path: Path) -> None:
    path = write_call(tmp_path / "silent.wav", np.zeros((2, 8000 * 6), dtype=np.float32), 8000, encoding="ulaw")
    config = CallScoringConfig()
    scores = score_call(path, bundle, config)
    assert scores.windows_scored == 0
    segments, summary = call_timeline(scores, config)
    assert [(s.channel, s.start_s, s.end_s, s.speech, s.label) for s in segments] == [
        ("0", 0.0, 6.0, False, None),
        ("1", 0.0, 6.0, False, None),
    ]
    assert summary.status == "no_speech" and summary.dominant_emotion is None
    assert summary.speech_s == {"0": 0.0, "1": 0.0}


def test_a_call_shorter_than_a_window_gets_one_window(bundle, tmp_path: Path) -> None:
    call = synth_call([Turn(0, 0.2, 1.6, "angry")], duration_s=1.8, channels=1, sample_rate=8000, seed=3)
    config = CallScoringConfig()
    scores = score_call(write_call(tmp_path / "short.wav", call, 8000), bundle, config)
    (turn,) = scores.channels[0].regions.tolist()
    assert scores.channels[0].windows.tolist() == [turn]
    segments, summary = call_timeline(scores, config)
    assert segments[0].start_s == 0.0 and segments[-1].end_s == pytest.approx(1.8)
    assert any(segment.label is not None for segment in segments)
    assert summary.duration_s == pytest.approx(1.8)


def test_unusable_files_raise_clip_errors(bundle, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ClipError) as excinfo:
        score_call(garbage, bundle, CallScoringConfig())
    assert excinfo.value.kind == "decode"
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(ClipError) as excinfo:
        score_call(empty, bundle, CallScoringConfig())
    assert excinfo.value.kind == "empty"
    broken = np.zeros(8000, dtype=np.float32)
    broken[100] = np.nan
    with pytest.raises(ClipError) as excinfo:
        score_call(write_call(tmp_path / "nan.wav", broken, 8000, encoding="float"), bundle, CallScoringConfig())
    assert excinfo.value.kind == "non_finite"
    mono = write_call(tmp_path / "mono.wav", np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(ClipError) as excinfo:
        score_call(mono, bundle, CallScoringConfig(), channels=(1,))
    assert excinfo.value.kind == "unsupported"


def test_streaming_equals_whole_file_and_the_training_path(bundle, stereo_call: Path) -> None:
    whole = score_call(stereo_call, bundle, CallScoringConfig(stream=StreamConfig(block_s=1000.0, batch_windows=100)))
    streamed = score_call(stereo_call, bundle, CallScoringConfig(stream=StreamConfig(block_s=0.37, batch_windows=3)))
    for a, b in zip(whole.channels, streamed.channels):
        np.testing.assert_array_equal(a.regions, b.regions)
        np.testing.assert_array_equal(a.windows, b.windows)
        np.testing.assert_array_equal(a.turns, b.turns)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    # the windows are those of each final turn, and each equals what the training code computes
    # from the whole decoded file
    decoded, info = decode_audio(stereo_call)
    audio = bundle.feature_config.audio
    for index, channel in enumerate(streamed.channels):
        expected_windows = [unit for start, end in channel.regions.tolist() for unit in turn_windows(start, end, streamed.geometry)]
        assert channel.windows.tolist() == [list(unit) for unit in expected_windows]
        mono = to_mono_target_rate(decoded[index : index + 1], info.sample_rate, audio)
        clips = np.stack([condition_clip(mono[start:end], audio) for start, end in channel.windows])
        expected = bundle.bundle.predict_proba(compute_features_batch(clips, 16000, bundle.feature_config))
        np.testing.assert_allclose(channel.probabilities, expected, atol=1e-5)


def test_speech_turns_without_a_model_are_the_turns_scoring_finds(bundle, stereo_call: Path) -> None:
    scored = score_call(stereo_call, bundle, CallScoringConfig())
    info, turns = speech_turns(stereo_call, bundle.feature_config.audio, CallScoringConfig(stream=StreamConfig(block_s=0.7)))
    assert info == scored.info and [name for name, _ in turns] == ["0", "1"]
    for (_, regions), channel in zip(turns, scored.channels):
        np.testing.assert_array_equal(regions, channel.regions)
    (_, mixed), = speech_turns(stereo_call, bundle.feature_config.audio, CallScoringConfig(), channels="mix")[1]
    assert len(mixed) > 0


def test_window_geometry_follows_the_model_and_refuses_what_it_cannot_honour() -> None:
    config = FeatureConfig()
    geometry = window_geometry(config, WindowConfig(window_s=0.0, hop_s=1.5))
    assert (geometry.sample_rate, geometry.window_samples, geometry.hop_samples) == (16000, 48000, 24000)
    assert window_geometry(config, WindowConfig(window_s=3.0)).window_samples == 48000
    with pytest.raises(UserError, match="does not match the model's 3.0 s"):
        window_geometry(config, WindowConfig(window_s=2.0))
    with pytest.raises(UserError, match="hop"):
        window_geometry(config, WindowConfig(hop_s=4.0))
    narrow = FeatureConfig(audio=AudioConfig(target_sample_rate_hz=8000))
    with pytest.raises(UserError, match="Nyquist"):
        window_geometry(narrow, WindowConfig())


def test_channel_choices() -> None:
    assert parse_channels("all", customer_channel=1) == "all"
    assert parse_channels("customer", customer_channel=1) == (1,)
    assert parse_channels("1,0", customer_channel=1) == (0, 1)
    with pytest.raises(UserError):
        parse_channels("left", customer_channel=1)
    assert channel_plan("all", 2) == [("0", (0,)), ("1", (1,))]
    assert channel_plan("mix", 2) == [("mix", (0, 1))]
    assert channel_plan((1,), 2) == [("1", (1,))]


def test_windows_are_fed_extraction_features_and_their_clips() -> None:
    config = FeatureConfig()
    clips = np.random.default_rng(0).standard_normal((2, config.audio.clip_samples)).astype(np.float32) * 0.1
    expected = compute_features_batch(clips, 16000, config)
    batch = window_batch(clips, config)
    assert set(batch) == {*expected, "waveform"}
    for name, values in expected.items():
        np.testing.assert_array_equal(batch[name], values)
    np.testing.assert_array_equal(batch["waveform"], clips)


def test_windows_without_signal_are_left_out_as_extraction_leaves_out_silent_clips(bundle) -> None:
    samples = bundle.feature_config.audio.clip_samples
    noise = np.random.default_rng(1).standard_normal(samples).astype(np.float32) * 0.1
    dc_offset = np.full(samples, 0.25, dtype=np.float32)  # loud enough for condition_clip, but no sound
    kept, probabilities = predict_windows(bundle, [dc_offset, noise, np.zeros(samples, dtype=np.float32)])
    assert kept == [1]
    assert probabilities.shape == (1, len(CALL_LABELS)) and probabilities.dtype == np.float32
    kept, probabilities = predict_windows(bundle, [dc_offset])
    assert kept == [] and probabilities.shape[0] == 0


def test_smoothing_averages_neighbouring_windows_of_the_same_turn_only() -> None:
    turns = np.array([0, 0, 0, 1])
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.8]], dtype=np.float32)
    smoothed = smooth_probabilities(turns, probabilities, 3)
    expected = np.array([[0.5, 0.5], [2 / 3, 1 / 3], [0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(smoothed, expected, atol=1e-6)
    np.testing.assert_array_equal(smooth_probabilities(turns, probabilities, 1), probabilities)


def test_turns_are_scored_whole_up_to_the_clip_length_and_windowed_inside_when_longer() -> None:
    geometry = WindowGeometry(sample_rate=10, window_samples=30, hop_samples=15, min_speech_samples=5)
    assert turn_windows(10, 14, geometry) == []  # shorter than min_speech_s
    assert turn_windows(10, 40, geometry) == [(10, 40)]  # whole, up to the window length
    assert turn_windows(10, 55, geometry) == [(10, 40), (25, 55)]  # the last regular window ends at the end
    assert turn_windows(10, 62, geometry) == [(10, 40), (25, 55), (32, 62)]  # one more, ending at the turn's end
    for start, end in [(0, 31), (7, 100), (3, 200)]:
        units = turn_windows(start, end, geometry)
        assert units[0][0] == start and units[-1][1] == end
        assert all(b - a == 30 for a, b in units)
        assert all(b[0] - a[0] <= 15 for a, b in zip(units, units[1:]))


def test_windows_never_span_a_pause_between_turns(bundle, stereo_call: Path) -> None:
    scores = score_call(stereo_call, bundle, CallScoringConfig())
    for channel in scores.channels:
        assert len(channel.windows) > 0
        for (start, end), turn in zip(channel.windows.tolist(), channel.turns.tolist()):
            region_start, region_end = channel.regions[turn]
            assert region_start <= start < end <= region_end


def test_segments_tile_the_channel_and_follow_the_turns_windows() -> None:
    geometry, channel = two_turn_channel()
    segments = channel_segments(channel, CALL_LABELS, geometry, smoothing=1)
    summary = [(s.start_s, s.end_s, s.speech, s.turn, s.label) for s in segments]
    # pieces of turn 0: [1,2.5) window 0 → angry 0.9; [2.5,4) windows 0,1 → 0.55 angry; [4,5.5)
    # window 1 → sad; turn 1 has no window → speech without label
    assert summary == [
        (0.0, 1.0, False, None, None),
        (1.0, 4.0, True, 0, "angry"),
        (4.0, 5.5, True, 0, "sad"),
        (5.5, 8.0, False, None, None),
        (8.0, 9.0, True, 1, None),
        (9.0, 10.0, False, None, None),
    ]
    angry = segments[1]
    expected = (np.array([0.9, 0.1]) + np.array([0.55, 0.45])) / 2
    np.testing.assert_allclose(angry.probabilities, expected, atol=1e-6)
    assert angry.confidence == pytest.approx(expected[0])


def test_low_confidence_speech_is_uncertain_and_left_out_of_the_shares() -> None:
    geometry, channel = two_turn_channel()
    scores = CallScores(AudioInfo(10, 1, 100, "PCM_16"), geometry, CALL_LABELS, [channel])

    def timeline(min_confidence: float):
        config = CallScoringConfig(smoothing=SmoothingConfig(windows=1), summary=SummaryConfig(min_confidence=min_confidence))
        return call_timeline(scores, config)

    # pieces (as in the test above): [1,2.5) top 0.9, [2.5,4) 0.55, [4,5.5) 0.8
    segments, summary = timeline(0.7)
    assert [(s.start_s, s.end_s, s.label) for s in segments if s.speech] == [
        (1.0, 2.5, "angry"), (2.5, 4.0, UNCERTAIN_LABEL), (4.0, 5.5, "sad"), (8.0, 9.0, None),
    ]
    uncertain = segments[2]
    assert uncertain.confidence == pytest.approx(0.55) and uncertain.probabilities is not None
    assert summary.uncertain_s == pytest.approx(1.5)
    assert summary.emotion_share == pytest.approx({"angry": 0.5, "sad": 0.5})

    segments, summary = timeline(0.0)  # the default: off
    assert UNCERTAIN_LABEL not in {s.label for s in segments}
    assert summary.uncertain_s == 0.0
    assert summary.emotion_share == pytest.approx({"angry": 3.0 / 4.5, "sad": 1.5 / 4.5})
    assert summary.dominant_emotion == "angry"
    with pytest.raises(ValueError, match="min_confidence"):
        SummaryConfig(min_confidence=1.5)


def test_negative_stretches_join_short_pauses_and_rank_by_confidence() -> None:
    def segment(start: float, end: float, label: str | None, confidence: float = 0.0, channel: str = "1") -> Segment:
        return Segment(channel, start, end, label is not None, label, confidence if label else None, None)

    segments = [
        segment(0, 2, "angry", 0.6),
        segment(2, 3, None),  # pause: joined
        segment(3, 5, "angry", 0.9),
        segment(5, 9, None),  # long pause: a new stretch
        segment(9, 10.5, "angry", 0.99),  # too short alone
        segment(10.5, 14, "neutral", 0.9),
        segment(14, 17, "sad", 0.7),
        segment(0, 3, "sad", 0.95, channel="0"),
    ]
    stretches = negative_stretches(segments, SummaryConfig(negative_labels=("angry", "sad"), min_stretch_s=2.0, stretch_gap_s=2.0))
    assert [(s.channel, s.start_s, s.end_s, s.label) for s in stretches] == [
        ("0", 0, 3, "sad"),
        ("1", 0, 5, "angry"),
        ("1", 14, 17, "sad"),
    ]
    assert stretches[1].confidence == pytest.approx(0.75)


def test_demo_call_writer(tmp_path: Path) -> None:
    turns = write_demo_call(tmp_path / "demo.wav", duration_s=20.0)
    info = sf.info(str(tmp_path / "demo.wav"))
    assert (info.channels, info.samplerate, info.subtype) == (2, 8000, "ULAW")
    written = json.loads((tmp_path / "demo.wav.turns.json").read_text())
    assert [Turn(**item) for item in written] == turns
    assert {turn.channel for turn in turns} == {0, 1}


# --- speaker adaptation -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adaptive_bundles(tmp_path_factory: pytest.TempPathFactory):
    from training.inference import load_call_model

    adaptive, plain = adaptive_call_bundles(tmp_path_factory.mktemp("adaptive"))
    return load_call_model(adaptive), load_call_model(plain)


@pytest.fixture(scope="module")
def two_speaker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_call(tmp_path_factory.mktemp("two") / "two.wav", two_speaker_call(), 8000, encoding="ulaw")


def _window_accuracy(channel: ChannelScores, turns: list[Turn]) -> float:
    truth = [turn_label(turns, (start + end) / 2 / 16000) for start, end in channel.windows.tolist()]
    predicted = [CALL_LABELS[index] for index in channel.probabilities.argmax(axis=1)]
    return float(np.mean([a == b for a, b in zip(truth, predicted)]))


ADAPT_FROM_4 = CallScoringConfig(adaptation=AdaptationConfig(min_windows=4))


def test_per_channel_statistics_undo_a_speaker_offset_that_global_statistics_do_not(adaptive_bundles, two_speaker_path):
    adaptive, plain = adaptive_bundles
    turns = two_speaker_turns()
    adapted = score_call(two_speaker_path, adaptive, ADAPT_FROM_4)
    assert [channel.adaptation for channel in adapted.channels] == ["speaker", "speaker"]
    assert [_window_accuracy(channel, own) for channel, own in zip(adapted.channels, turns)] >= [0.8, 0.8]
    # the same training windows with global statistics: the bright voice on channel 1 is mislabelled
    global_scores = score_call(two_speaker_path, plain, ADAPT_FROM_4)
    assert [channel.adaptation for channel in global_scores.channels] == ["none", "none"]
    assert _window_accuracy(global_scores.channels[0], turns[0]) >= 0.8
    assert _window_accuracy(global_scores.channels[1], turns[1]) <= 0.6


def test_the_statistics_of_a_channel_are_its_own_windows_over_the_whole_call(adaptive_bundles, two_speaker_path):
    adaptive, _ = adaptive_bundles
    scores = score_call(two_speaker_path, adaptive, CallScoringConfig(
        adaptation=AdaptationConfig(min_windows=4), stream=StreamConfig(block_s=0.7, batch_windows=3)))
    decoded, info = decode_audio(two_speaker_path)
    audio = adaptive.feature_config.audio
    for index, channel in enumerate(scores.channels):
        mono = to_mono_target_rate(decoded[index : index + 1], info.sample_rate, audio)
        clips = np.stack([condition_clip(mono[start:end], audio) for start, end in channel.windows])
        batch = compute_features_batch(clips, 16000, adaptive.feature_config)
        # the training path: every clip of the channel as one speaker's
        expected = adaptive.bundle.predict_proba(batch, groups=np.zeros(len(clips)))
        np.testing.assert_allclose(channel.probabilities, expected, atol=1e-5)


def test_a_channel_with_too_little_speech_falls_back_and_says_so(adaptive_bundles, two_speaker_path):
    adaptive, _ = adaptive_bundles
    scores = score_call(two_speaker_path, adaptive, CallScoringConfig(adaptation=AdaptationConfig(min_windows=100)))
    assert [channel.adaptation for channel in scores.channels] == ["none", "none"]
    for channel in scores.channels:  # the CNN alone, whose classifier here is zero: uniform
        np.testing.assert_allclose(channel.probabilities, 0.5, atol=1e-6)
    off = score_call(two_speaker_path, adaptive, CallScoringConfig(adaptation=AdaptationConfig(mode="off")))
    assert [channel.adaptation for channel in off.channels] == ["none", "none"]
    with pytest.raises(ValueError, match="adaptation.mode"):
        AdaptationConfig(mode="global")


def test_a_mono_call_and_the_mix_are_one_speaker(adaptive_bundles, two_speaker_path, tmp_path: Path):
    adaptive, _ = adaptive_bundles
    mono = write_call(tmp_path / "mono.wav", two_speaker_call()[1], 8000)
    (channel,) = score_call(mono, adaptive, ADAPT_FROM_4).channels
    assert (channel.name, channel.adaptation) == ("0", "speaker")
    (mixed,) = score_call(two_speaker_path, adaptive, ADAPT_FROM_4, channels="mix").channels
    assert (mixed.name, mixed.adaptation) == ("mix", "speaker")


def test_a_channel_without_speech_is_not_adapted_and_the_other_is(adaptive_bundles, tmp_path: Path):
    adaptive, _ = adaptive_bundles
    call = two_speaker_call()
    call[1] = 0.0
    scores = score_call(write_call(tmp_path / "one-sided.wav", call, 8000, encoding="ulaw"), adaptive, ADAPT_FROM_4)
    assert [(c.adaptation, len(c.windows) > 0) for c in scores.channels] == [("speaker", True), ("none", False)]
    segments, summary = call_timeline(scores, ADAPT_FROM_4)
    assert summary.status == "ok" and summary.speech_s["1"] == 0.0


def test_a_logreg_standardised_per_speaker_has_no_fallback_and_is_refused(tmp_path: Path):
    from training.bundle.load import load_bundle, save_bundle
    from training.inference import CallModel

    tiny = load_bundle(call_bundle(tmp_path / "tiny"))
    per_speaker = load_bundle(save_bundle(
        tmp_path / "per-speaker", model=tiny.model, taxonomy=tiny.taxonomy, labels=tiny.labels,
        feature_config=tiny.feature_config, training={"note": "tests"}, metrics={}, stats_normalisation="speaker",
    ))
    with pytest.raises(UserError, match="nothing to fall back to"):
        CallModel(per_speaker)
