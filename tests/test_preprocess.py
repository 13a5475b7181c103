import numpy as np
import pytest

from ser_udfs.errors import ClipError
from ser_udfs.features.config import AudioConfig
from ser_udfs.audio.preprocess import (
    Resampler,
    condition_clip,
    downmix,
    fix_duration,
    frame_rms,
    peak_normalise,
    preprocess,
    resample,
    to_mono_target_rate,
    trim_silence,
)


def _tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_downmix_averages_channels() -> None:
    stereo = np.stack([np.ones(10, np.float32), -np.ones(10, np.float32) * 0.5])
    np.testing.assert_allclose(downmix(stereo), np.full(10, 0.25))
    assert downmix(stereo[:1]).shape == (10,)


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone_and_the_duration(source_rate: int) -> None:
    out = resample(_tone(1.0, source_rate), source_rate, 16000)
    assert out.dtype == np.float32 and abs(out.size - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.size - 440) < 2
    reference = _tone(1.0, 16000)[100:-100]
    assert np.max(np.abs(out[100:-100] - reference)) < 1e-3


def test_resample_is_identity_at_the_target_rate() -> None:
    tone = _tone(0.1, 16000)
    assert resample(tone, 16000, 16000) is tone
    assert Resampler(16000, 16000, channels=2).push(np.stack([tone, tone])).shape == (2, tone.size)


@pytest.mark.parametrize("source_rate", [8000, 44100])
def test_streamed_resampling_gives_the_samples_of_whole_signal_preprocessing(source_rate: int) -> None:
    """A minute of noise and tones on two channels, fed to the resampler in uneven blocks as call
    scoring feeds it, against extraction's whole-signal preprocessing of each channel."""
    config = AudioConfig()
    rng = np.random.default_rng(7)
    n = 60 * source_rate
    stereo = np.stack([
        0.05 * rng.standard_normal(n) + _tone(60.0, source_rate, 440.0) + _tone(60.0, source_rate, 1234.5, 0.2),
        0.2 * rng.standard_normal(n) + _tone(60.0, source_rate, 97.0, 0.5),
    ]).astype(np.float32)
    resampler = Resampler(source_rate, config.target_sample_rate_hz, channels=2, quality=config.resample_quality)
    sizes = rng.integers(1, 3 * source_rate, size=n)
    edges = np.concatenate([[0], np.cumsum(sizes)])
    edges = np.append(edges[edges < n], n)
    blocks = [resampler.push(stereo[:, start:end]) for start, end in zip(edges[:-1], edges[1:])]
    blocks.append(resampler.push(np.zeros((2, 0), np.float32), last=True))
    assert len(blocks) > 30 and min(end - start for start, end in zip(edges[:-1], edges[1:])) < source_rate
    streamed = np.concatenate(blocks, axis=1)
    for channel in range(2):
        whole = to_mono_target_rate(stereo[channel : channel + 1], source_rate, config)
        assert streamed[channel].dtype == whole.dtype == np.float32
        assert streamed[channel].shape == whole.shape == (60 * config.target_sample_rate_hz,)
        np.testing.assert_allclose(streamed[channel], whole, rtol=0, atol=np.finfo(np.float32).eps)


def test_peak_normalise_sets_the_peak_and_leaves_silence() -> None:
    assert np.isclose(np.max(np.abs(peak_normalise(_tone(0.1, 16000), 0.9))), 0.9)
    zeros = np.zeros(100, np.float32)
    np.testing.assert_array_equal(peak_normalise(zeros), zeros)


def test_frame_rms_matches_librosa() -> None:
    import librosa

    y = np.random.default_rng(1).standard_normal(12345).astype(np.float32)
    expected = librosa.feature.rms(y=y, frame_length=1024, hop_length=256, center=True, pad_mode="constant")[0]
    np.testing.assert_allclose(frame_rms(y, 1024, 256), expected, rtol=1e-5)


def test_trim_silence_matches_librosa_on_padded_tone() -> None:
    import librosa

    y = np.concatenate([np.zeros(8000), _tone(1.0, 16000), np.zeros(12000)]).astype(np.float32)
    y += np.random.default_rng(0).normal(0, 1e-4, y.size).astype(np.float32)
    expected, _ = librosa.effects.trim(y, top_db=30, frame_length=1024, hop_length=256)
    trimmed = trim_silence(y, top_db=30, frame_length=1024, hop_length=256)
    np.testing.assert_array_equal(trimmed, expected)
    assert 16000 <= trimmed.size < 16000 + 2 * 1024


@pytest.mark.parametrize("align", ["centre", "start"])
def test_fix_duration_pads_and_crops(align: str) -> None:
    short = np.arange(1, 5, dtype=np.float32)
    padded = fix_duration(short, 8, align)
    expected_pad = [0, 0, 1, 2, 3, 4, 0, 0] if align == "centre" else [1, 2, 3, 4, 0, 0, 0, 0]
    np.testing.assert_array_equal(padded, expected_pad)
    long = np.arange(10, dtype=np.float32)
    expected_crop = [3, 4, 5, 6] if align == "centre" else [0, 1, 2, 3]
    np.testing.assert_array_equal(fix_duration(long, 4, align), expected_crop)


def test_preprocess_gives_a_fixed_length_normalised_clip() -> None:
    config = AudioConfig()
    stereo = np.stack([_tone(4.0, 48000), _tone(4.0, 48000, 330)])
    clip = preprocess(stereo, 48000, config)
    assert clip.shape == (48000,) and clip.dtype == np.float32
    assert np.isclose(np.max(np.abs(clip)), config.peak_level, atol=1e-3)


def test_silent_short_and_non_finite_clips_are_reported() -> None:
    config = AudioConfig()
    with pytest.raises(ClipError) as silent:
        condition_clip(np.zeros(16000, np.float32), config)
    assert silent.value.kind == "silent"
    with pytest.raises(ClipError) as short:
        to_mono_target_rate(np.ones((1, 10), np.float32), 16000, config)
    assert short.value.kind == "too_short"
    bad = _tone(0.5, 16000)
    bad[100] = np.nan
    with pytest.raises(ClipError) as non_finite:
        to_mono_target_rate(bad[None, :], 16000, config)
    assert non_finite.value.kind == "non_finite"
    with pytest.raises(ClipError, match="constant DC offset") as dc_offset:
        to_mono_target_rate(np.full((2, 16000), 0.25, np.float32), 16000, config)
    assert dc_offset.value.kind == "silent"


def test_stereo_whose_channels_cancel_in_the_down_mix_says_so() -> None:
    config = AudioConfig()
    tone = _tone(1.0, 16000)
    with pytest.raises(ClipError, match="the channels cancel out") as cancelled:
        to_mono_target_rate(np.stack([tone, -tone]), 16000, config)
    assert cancelled.value.kind == "silent" and "single channel" in cancelled.value.message
    assert "\n" not in cancelled.value.message and "DC offset" not in cancelled.value.message
    with pytest.raises(ClipError, match="constant DC offset"):  # every channel silent: silence, as before
        to_mono_target_rate(np.zeros((2, 16000), np.float32), 16000, config)


def _long_recording(seconds: float, rate: int, *, speech: tuple[float, float], channels: int = 2) -> np.ndarray:
    """``[channels, n]``: quiet noise (-80 dBFS) with a stretch of tones and noise at ``speech`` (start, end s)."""
    rng = np.random.default_rng(11)
    n = int(seconds * rate)
    signal = np.tile(1e-4 * rng.standard_normal(n).astype(np.float32), (channels, 1))
    start, end = int(speech[0] * rate), int(speech[1] * rate)
    loud = 0.4 * np.sin(2 * np.pi * 310.0 * np.arange(end - start) / rate).astype(np.float32)
    loud += 0.05 * rng.standard_normal(end - start).astype(np.float32)
    loud *= np.sin(np.linspace(0, 9 * np.pi, end - start)).astype(np.float32) ** 2  # syllable-like envelope
    for channel in range(channels):
        signal[channel, start:end] += loud * (1.0 - 0.3 * channel)
    return signal


@pytest.mark.parametrize(
    "rate, speech, settings",
    [
        (48000, (20.0, 50.0), {}),  # crop from the middle of the trimmed speech
        (44100, (20.0, 50.0), {"align": "start", "trim_silence": False}),
        (48000, (30.0, 31.2), {"peak_normalise": False}),  # trimmed speech shorter than the clip: padded
        (16000, (5.0, 64.0), {"align": "start"}),  # no resampling
    ],
)
def test_long_files_are_preprocessed_streamed_with_the_whole_signal_result(
    tmp_path, monkeypatch, rate: int, speech: tuple[float, float], settings: dict
) -> None:
    """A 70 s recording, decoded in blocks three times, gives the clip and features of decoding it whole."""
    import soundfile as sf

    from ser_udfs.audio.decode import decode_audio
    from ser_udfs.audio.preprocess import preprocess_streamed
    from ser_udfs.features import extract_file as extract_module
    from ser_udfs.features.compute import compute_features_batch
    from ser_udfs.features.config import FeatureConfig

    config = FeatureConfig(audio=AudioConfig(**settings))
    path = tmp_path / "long.wav"
    sf.write(path, _long_recording(70.0, rate, speech=speech).T, rate, subtype="PCM_16")
    decoded, info = decode_audio(str(path))
    whole = preprocess(decoded, rate, config.audio)
    def blocks():  # uneven blocks, as a decoder gives them
        return (decoded[:, start : start + 70001] for start in range(0, decoded.shape[1], 70001))

    streamed, frames = preprocess_streamed(blocks, rate, config.audio)
    assert frames == info.frames and streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=np.finfo(np.float32).eps)

    def no_whole_decode(source):
        raise AssertionError("a long file was decoded whole")

    monkeypatch.setattr(extract_module, "decode_audio", no_whole_decode)
    got_info, (row,) = extract_module.extract_file(str(path), "id", config, extract_module.ExtractOptions())
    assert got_info == info
    expected = compute_features_batch(whole[None], config.audio.target_sample_rate_hz, config)
    for name, values in expected.items():
        np.testing.assert_allclose(row.features[name], values[0], rtol=1e-5, atol=1e-5)


def test_long_files_streamed_are_refused_as_whole_files_are(tmp_path) -> None:
    """Cancelling channels, silence and a NaN near the end of 70 s files: the whole path's errors."""
    import soundfile as sf

    from ser_udfs.features.extract_file import ExtractOptions, extract_file

    from ser_udfs.features.config import FeatureConfig

    config = FeatureConfig()
    rate = 8000
    cases = {}
    tone = _tone(70.0, rate)
    cases["cancel.wav"] = (np.stack([tone, -tone]), "FLOAT", "silent", "the channels cancel out")
    cases["silence.wav"] = (np.zeros((1, 70 * rate), np.float32), "PCM_16", "silent", "constant DC offset")
    broken = tone.copy()
    broken[65 * rate] = np.nan
    cases["nan.wav"] = (broken[None], "FLOAT", "non_finite", "NaN or infinite")
    for name, (signal, subtype, kind, message) in cases.items():
        sf.write(tmp_path / name, signal.T, rate, subtype=subtype)
        with pytest.raises(ClipError, match=message) as streamed:
            extract_file(str(tmp_path / name), "id", config, ExtractOptions())
        with pytest.raises(ClipError) as whole:
            preprocess(signal, rate, config.audio)
        assert streamed.value.kind == whole.value.kind == kind, name
        assert streamed.value.message == whole.value.message, name
