"""Waveform augmentation: shapes, determinism, tags, the telephone channel's band limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_udfs.audio.augment import AugmentConfig, augment_variants, mu_law_decode, mu_law_encode, telephone_channel
from ser_udfs.settings import ConfigError, from_dict, load_toml

SAMPLE_RATE = 16000
CONF_FILE = Path(__file__).resolve().parents[1] / "conf" / "features.toml"


@pytest.fixture(scope="module")
def waveform() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _band_energy(samples: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    return float(spectrum[(frequencies >= low_hz) & (frequencies < high_hz)].sum())


def test_variants_have_tags_shapes_and_are_deterministic(waveform: np.ndarray) -> None:
    config = AugmentConfig()
    variants = augment_variants(waveform, SAMPLE_RATE, config, n_variants=5, seed=7)
    assert len(variants) == 5
    for tag, samples in variants:
        assert samples.dtype == np.float32 and samples.ndim == 1 and np.isfinite(samples).all()
        if "stretch" in tag:
            rate = float(tag.split("stretch")[1][:4])
            assert abs(samples.size - waveform.size / rate) < 0.02 * waveform.size
        else:
            assert samples.shape == waveform.shape
        assert not np.array_equal(samples, waveform)
    # one variant per effect in turn: five variants cover all five effects
    tags = "+".join(tag for tag, _ in variants)
    for name in ("stretch", "pitch", "gain", "noise_snr", "telephone"):
        assert name in tags
    again = augment_variants(waveform, SAMPLE_RATE, config, n_variants=5, seed=7)
    assert [tag for tag, _ in again] == [tag for tag, _ in variants]
    for (_, first), (_, second) in zip(variants, again):
        np.testing.assert_array_equal(first, second)
    other = augment_variants(waveform, SAMPLE_RATE, config, n_variants=5, seed=8)
    assert [tag for tag, _ in other] != [tag for tag, _ in variants]


def test_a_variant_does_not_depend_on_how_many_were_asked_for(waveform: np.ndarray) -> None:
    config = AugmentConfig(effects=("noise", "gain"))
    two = augment_variants(waveform, SAMPLE_RATE, config, n_variants=2, seed=3)
    three = augment_variants(waveform, SAMPLE_RATE, config, n_variants=3, seed=3)
    for (tag_a, samples_a), (tag_b, samples_b) in zip(two, three):
        assert tag_a == tag_b
        np.testing.assert_array_equal(samples_a, samples_b)


def test_global_random_state_is_left_alone(waveform: np.ndarray) -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    augment_variants(waveform, SAMPLE_RATE, AugmentConfig(effects=("noise",)), n_variants=2, seed=0)
    assert np.random.random() == expected


def test_noise_variant_has_the_drawn_snr(waveform: np.ndarray) -> None:
    config = AugmentConfig(effects=("noise",), noise_snr_db_range=(10.0, 10.0))
    (tag, noisy), = augment_variants(waveform, SAMPLE_RATE, config, n_variants=1, seed=0)
    assert tag == "noise_snr10"
    noise = noisy - waveform
    snr_db = 10 * np.log10(np.mean(waveform**2) / np.mean(noise**2))
    assert snr_db == pytest.approx(10.0, abs=0.3)


def test_telephone_channel_is_band_limited(waveform: np.ndarray) -> None:
    white = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    line = telephone_channel(white, SAMPLE_RATE)
    assert line.shape == white.shape and line.dtype == np.float32
    in_band = _band_energy(line, 300, 3400) / _band_energy(white, 300, 3400)
    above = _band_energy(line, 4000, 8000) / _band_energy(white, 4000, 8000)
    below = _band_energy(line, 0, 150) / _band_energy(white, 0, 150)
    assert in_band > 0.7
    assert above < 1e-2  # at least 20 dB down above the 8 kHz codec's Nyquist frequency
    assert below < 1e-2
    assert telephone_channel(white[:-1], SAMPLE_RATE).shape == (SAMPLE_RATE - 1,)


def test_telephone_line_noise_sits_at_the_drawn_absolute_level(waveform: np.ndarray) -> None:
    config = AugmentConfig(effects=("telephone",), telephone_noise_dbfs_range=(-40.0, -40.0))
    quiet, loud = waveform * 0.01, waveform
    (tag, line_quiet), = augment_variants(quiet, SAMPLE_RATE, config, n_variants=1, seed=0)
    (_, line_loud), = augment_variants(loud, SAMPLE_RATE, config, n_variants=1, seed=0)
    assert tag == "telephone_noise-40db"
    # the noise is the same absolute level under quiet and loud speech: what the line adds to
    # each is the noise (plus µ-law error), band-limited to about 3100 of the 8000 Hz it was drawn over
    clean_quiet = telephone_channel(quiet, SAMPLE_RATE)
    clean_loud = telephone_channel(loud, SAMPLE_RATE)
    for noisy, clean in ((line_quiet, clean_quiet), (line_loud, clean_loud)):
        noise_db = 10 * np.log10(np.mean((noisy - clean) ** 2))
        assert -40.0 - 6.0 < noise_db < -40.0 - 2.0
    silence = np.zeros(SAMPLE_RATE, np.float32)
    assert np.max(np.abs(telephone_channel(silence, SAMPLE_RATE))) < 1e-3
    noise = telephone_channel(silence, SAMPLE_RATE, noise_dbfs=-40.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(noise, telephone_channel(silence, SAMPLE_RATE, noise_dbfs=-40.0,
                                                           rng=np.random.default_rng(1)))
    with pytest.raises(ValueError, match="rng"):
        telephone_channel(silence, SAMPLE_RATE, noise_dbfs=-40.0)


def test_mu_law_round_trip() -> None:
    samples = np.linspace(-1, 1, 1001)
    codes = mu_law_encode(samples)
    assert codes.min() == 0 and codes.max() == 255
    restored = mu_law_decode(codes)
    # µ-law keeps the relative error small for loud samples and the absolute error tiny for quiet ones
    loud = np.abs(samples) > 0.1
    assert np.max(np.abs(restored[loud] - samples[loud]) / np.abs(samples[loud])) < 0.05
    assert np.max(np.abs(restored[~loud] - samples[~loud])) < 0.005


def test_edge_cases_and_bad_configs(waveform: np.ndarray) -> None:
    assert augment_variants(waveform, SAMPLE_RATE, AugmentConfig(), n_variants=0, seed=0) == []
    with pytest.raises(ValueError, match="mono"):
        augment_variants(np.zeros((2, 100), np.float32), SAMPLE_RATE, AugmentConfig(), n_variants=1, seed=0)
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(AugmentConfig, {"effects": ["reverb"]})
    with pytest.raises(ConfigError, match="low <= high"):
        from_dict(AugmentConfig, {"gain_db_range": [6.0, -6.0]})
    for bad in ([-50.0, -60.0], [-60.0, 3.0], [-60.0]):
        with pytest.raises(ConfigError, match="telephone_noise_dbfs_range"):
            from_dict(AugmentConfig, {"telephone_noise_dbfs_range": bad})


def test_conf_file_matches_the_defaults() -> None:
    assert from_dict(AugmentConfig, load_toml(CONF_FILE)["augment"]["settings"]) == AugmentConfig()
