import librosa
import numpy as np
import pytest

from ser_udfs.features.config import FeatureConfig, MelConfig, MfccConfig, StatsConfig
from ser_udfs.features.compute import compute_features, compute_features_batch, stats_length, zero_crossing_rate

RATE = 16000


def _speechy(seed: int = 0, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    y = 0.4 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def test_shapes_follow_the_config() -> None:
    config = FeatureConfig()
    features = compute_features(_speechy(), RATE, config)
    assert features["log_mel"].shape == (128, 94)
    assert features["mfcc"].shape == (13, 94)
    assert features["zcr"].shape == (1, 94)
    assert features["stats"].shape == (stats_length(config),) == ((13 + 128 + 1) * 2,)
    assert all(v.dtype == np.float32 for v in features.values())


def test_log_mel_and_mfcc_equal_librosa() -> None:
    y = _speechy()
    features = compute_features(y, RATE, FeatureConfig())
    mel = librosa.feature.melspectrogram(y=y, sr=RATE, n_fft=2048, hop_length=512, n_mels=128, fmax=8000)
    np.testing.assert_allclose(features["log_mel"], librosa.power_to_db(mel, ref=1.0, top_db=80), atol=1e-3)
    mfcc = librosa.feature.mfcc(y=y, sr=RATE, n_mfcc=13, n_fft=2048, hop_length=512, n_mels=128, fmax=8000)
    np.testing.assert_allclose(features["mfcc"], mfcc, atol=1e-3)


def test_other_window_and_hop_equal_librosa() -> None:
    y = _speechy(1, 1.3)
    config = FeatureConfig(mel=MelConfig(n_mels=40, n_fft=512, win_length=400, hop_length=160, fmin_hz=50, fmax_hz=7600))
    mel = librosa.feature.melspectrogram(
        y=y, sr=RATE, n_fft=512, win_length=400, hop_length=160, n_mels=40, fmin=50, fmax=7600
    )
    features = compute_features(y, RATE, config)
    np.testing.assert_allclose(features["log_mel"], librosa.power_to_db(mel, top_db=80), atol=1e-3)


def test_mfcc_deltas_stack_under_the_coefficients() -> None:
    y = _speechy()
    config = FeatureConfig(mfcc=MfccConfig(deltas=True))
    mfcc = compute_features(y, RATE, config)["mfcc"]
    assert mfcc.shape == (39, 94)
    expected = librosa.feature.delta(mfcc[:13], width=9)
    np.testing.assert_allclose(mfcc[13:26], expected, atol=1e-4)
    assert compute_features(y, RATE, config)["stats"].size == stats_length(config)


@pytest.mark.parametrize("freq", [100.0, 440.0, 1000.0])
def test_zcr_of_a_pure_tone_is_twice_its_frequency_over_the_rate(freq: float) -> None:
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * freq * t + 0.1).astype(np.float32)
    zcr = zero_crossing_rate(tone[None, :], FeatureConfig().zcr)[0, 0]
    np.testing.assert_allclose(np.median(zcr), 2 * freq / RATE, rtol=0.02)
    expected = librosa.feature.zero_crossing_rate(tone, frame_length=2048, hop_length=512)
    np.testing.assert_allclose(zcr, expected[0], atol=1e-7)


def test_stats_are_means_and_stds_in_order() -> None:
    config = FeatureConfig(stats=StatsConfig(features=("mfcc", "zcr"), functions=("mean", "std", "max")))
    features = compute_features(_speechy(), RATE, config)
    mfcc, zcr, stats = features["mfcc"], features["zcr"], features["stats"]
    expected = np.concatenate(
        [mfcc.mean(1), mfcc.std(1), mfcc.max(1), zcr.mean(1), zcr.std(1), zcr.max(1)]
    )
    np.testing.assert_allclose(stats, expected, rtol=1e-5, atol=1e-5)


def test_batch_equals_one_by_one() -> None:
    clips = np.stack([_speechy(seed) for seed in range(3)])
    batch = compute_features_batch(clips, RATE, FeatureConfig())
    for index in range(3):
        single = compute_features(clips[index], RATE, FeatureConfig())
        for name, value in single.items():
            np.testing.assert_allclose(batch[name][index], value, rtol=1e-6, atol=1e-5)


def test_features_of_a_padded_quiet_clip_are_finite() -> None:
    clip = np.zeros(48000, np.float32)
    clip[20000:21000] = 1e-3
    features = compute_features(clip, RATE, FeatureConfig())
    assert all(np.isfinite(v).all() for v in features.values())
