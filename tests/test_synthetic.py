"""Synthetic speech-like emotional audio and the RAVDESS-style demo corpus."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from ser_udfs.corpora import CANONICAL_LABELS, parse_clip_path
from ser_udfs.synthetic.speech import EMOTION_PROFILES, synth_utterance, write_demo_corpus

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
SPEAKERS = ((1, False), (2, True), (3, False), (4, True))  # (speaker_seed, female)


def _active_rms_db(samples: np.ndarray) -> float:
    """RMS in dB over the frames within 30 dB of the loudest one."""
    frame_rms = librosa.feature.rms(y=samples, frame_length=1024, hop_length=256)[0]
    active = frame_rms[frame_rms > frame_rms.max() * 10 ** (-30 / 20)]
    return float(20 * np.log10(np.sqrt(np.mean(active**2))))


def _median_f0_hz(samples: np.ndarray, sample_rate: int) -> float:
    """Median YIN pitch over the frames within 10 dB of the loudest one."""
    f0_hz = librosa.yin(samples, fmin=60, fmax=700, sr=sample_rate, frame_length=1024, hop_length=256)
    frame_rms = librosa.feature.rms(y=samples, frame_length=1024, hop_length=256)[0]
    return float(np.median(f0_hz[frame_rms > frame_rms.max() * 10 ** (-10 / 20)]))


def _high_to_low_band_db(samples: np.ndarray, sample_rate: int) -> float:
    """Energy above 2 kHz relative to energy below 1 kHz, dB: higher means a flatter spectrum."""
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    frequency_hz = np.fft.rfftfreq(samples.size, 1 / sample_rate)
    return float(10 * np.log10(power[frequency_hz > 2000].sum() / power[frequency_hz < 1000].sum()))


def _mean_over_speakers(emotion: str, measure, **kwargs) -> float:
    return float(
        np.mean(
            [
                measure(synth_utterance(emotion, speaker_seed=seed, utterance_seed=7, female=female, **kwargs))
                for seed, female in SPEAKERS
            ]
        )
    )


def test_profiles_cover_the_canonical_labels() -> None:
    assert set(EMOTION_PROFILES) == set(CANONICAL_LABELS)


@pytest.mark.parametrize("emotion", sorted(EMOTION_PROFILES))
def test_shape_dtype_and_peak(emotion: str) -> None:
    samples = synth_utterance(emotion, speaker_seed=5, utterance_seed=11, strong=True)
    assert samples.shape == (40000,)
    assert samples.dtype == np.float32
    assert np.all(np.isfinite(samples))
    assert 0.0 < np.abs(samples).max() <= 1.0


@pytest.mark.parametrize(("sample_rate", "duration_s"), [(8000, 1.0), (16000, 0.3), (22050, 2.5), (48000, 3.2)])
def test_other_rates_and_durations(sample_rate: int, duration_s: float) -> None:
    samples = synth_utterance("happy", speaker_seed=1, utterance_seed=1, sample_rate=sample_rate, duration_s=duration_s)
    assert samples.shape == (round(sample_rate * duration_s),)
    assert np.all(np.isfinite(samples)) and np.abs(samples).max() <= 1.0


def test_determinism() -> None:
    first = synth_utterance("fear", speaker_seed=3, utterance_seed=4, female=True)
    np.testing.assert_array_equal(first, synth_utterance("fear", speaker_seed=3, utterance_seed=4, female=True))
    assert not np.array_equal(first, synth_utterance("fear", speaker_seed=3, utterance_seed=5, female=True))
    assert not np.array_equal(first, synth_utterance("fear", speaker_seed=4, utterance_seed=4, female=True))


def test_leading_and_trailing_silence() -> None:
    samples = synth_utterance("angry", speaker_seed=1, utterance_seed=2)
    edge = 160  # 10 ms
    loud_db = _active_rms_db(samples)
    for part in (samples[:edge], samples[-edge:]):
        assert 20 * np.log10(np.sqrt(np.mean(part.astype(np.float64) ** 2))) < loud_db - 40


def test_unknown_emotion_and_too_short() -> None:
    with pytest.raises(ValueError, match="unknown emotion"):
        synth_utterance("contempt", speaker_seed=1, utterance_seed=1)
    with pytest.raises(ValueError, match="too short"):
        synth_utterance("sad", speaker_seed=1, utterance_seed=1, duration_s=0.05)


def test_energy_order() -> None:
    level_db = {emotion: _mean_over_speakers(emotion, _active_rms_db) for emotion in ("angry", "happy", "neutral", "sad")}
    assert level_db["angry"] > level_db["happy"] > level_db["neutral"] > level_db["sad"]
    assert level_db["angry"] - level_db["sad"] > 10


def test_strong_intensity_is_louder() -> None:
    for seed, female in SPEAKERS:
        normal = synth_utterance("happy", speaker_seed=seed, utterance_seed=3, female=female)
        strong = synth_utterance("happy", speaker_seed=seed, utterance_seed=3, female=female, strong=True)
        assert _active_rms_db(strong) > _active_rms_db(normal) + 2


def test_pitch_order() -> None:
    f0_hz = {
        emotion: _mean_over_speakers(emotion, lambda samples: _median_f0_hz(samples, 16000))
        for emotion in ("fear", "happy", "neutral", "sad", "disgust")
    }
    assert f0_hz["fear"] > f0_hz["neutral"] > f0_hz["sad"]
    assert f0_hz["happy"] > f0_hz["neutral"] > f0_hz["disgust"]
    assert f0_hz["fear"] > 1.3 * f0_hz["sad"]


def test_female_voices_are_higher() -> None:
    for seed in (1, 2, 3):
        male = synth_utterance("neutral", speaker_seed=seed, utterance_seed=1)
        female = synth_utterance("neutral", speaker_seed=seed, utterance_seed=1, female=True)
        assert _median_f0_hz(female, 16000) > 1.3 * _median_f0_hz(male, 16000)


def test_spectral_tilt_order() -> None:
    tilt_db = {
        emotion: _mean_over_speakers(emotion, lambda samples: _high_to_low_band_db(samples, 16000))
        for emotion in ("angry", "neutral", "sad")
    }
    assert tilt_db["angry"] > tilt_db["neutral"] + 3
    assert tilt_db["neutral"] > tilt_db["sad"] + 3


def test_write_demo_corpus_names_parse_back(tmp_path: Path) -> None:
    written = write_demo_corpus(tmp_path, n_actors=2, statements=1, repetitions=2, sample_rate=8000)
    # neutral has one intensity, the other seven emotions two
    assert len(written) == 2 * (1 + 7 * 2) * 1 * 2
    assert written == sorted(tmp_path.rglob("*.wav"))
    for path in written:
        info = parse_clip_path(str(path))
        emotion_code = path.stem.split("-")[2]
        assert info.corpus == "ravdess"
        assert info.label == RAVDESS_EMOTIONS[int(emotion_code) - 1]
        assert path.parent.name == f"Actor_{info.speaker}"
        assert info.gender == ("male" if int(info.speaker) % 2 else "female")
        assert info.meta["statement"] == "01" and info.meta["repetition"] in ("01", "02")
        file_info = sf.info(str(path))
        assert (file_info.samplerate, file_info.channels, file_info.subtype) == (8000, 1, "PCM_16")
        assert file_info.duration == pytest.approx(2.5)
    labels = {parse_clip_path(str(path)).label for path in written}
    assert labels == set(RAVDESS_EMOTIONS)


def test_write_demo_corpus_is_reproducible_flac(tmp_path: Path) -> None:
    first = write_demo_corpus(tmp_path / "a", n_actors=1, statements=1, repetitions=1, emotions=["sad", "neutral"], fmt="FLAC")
    second = write_demo_corpus(tmp_path / "b", n_actors=1, statements=1, repetitions=1, emotions=["sad", "neutral"], fmt="FLAC")
    assert [path.name for path in first] == [
        "03-01-01-01-01-01-01.flac",
        "03-01-04-01-01-01-01.flac",
        "03-01-04-02-01-01-01.flac",
    ]
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in second]
    assert all(parse_clip_path(path.as_uri()).corpus == "ravdess" for path in first)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"emotions": ["boredom"]}, "no RAVDESS code"),
        ({"n_actors": 25}, "n_actors=25"),
        ({"n_actors": 0}, "n_actors=0"),
        ({"statements": 3}, "statements=3"),
        ({"repetitions": 3}, "repetitions=3"),
    ],
)
def test_write_demo_corpus_rejects_what_ravdess_names_cannot_say(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_demo_corpus(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
