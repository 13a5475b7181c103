"""Waveform augmentation: noise at an SNR, gain, time stretch, pitch shift, a telephone channel (with line noise).

Pure NumPy in, NumPy out; no Spark. The extraction job applies :func:`augment_variants` to the
mono waveform at the target sample rate *before* normalise / trim / fix-duration, and stores
each variant as its own features row (``augmentation`` = the variant's tag, ``clip_id`` +
``#aug<k>``), so that augmented features come from the one shared feature implementation.

Why offline and not in the training loop: training reads feature tables (log-mel, MFCC,
stats), not waveforms, and the features must come from the same code that scoring runs.
Feature-space augmentation that needs no waveform (SpecAugment masking, mixup) happens on the
fly inside :mod:`training.models.cnn`.

Effects come from ``audiomentations`` where it has them (``AddGaussianSNR``, ``Gain``,
``TimeStretch``, ``PitchShift``, ``HighPassFilter``, ``LowPassFilter``); the 8 kHz µ-law round
trip of the telephone channel is written here because audiomentations has no µ-law codec.
Parameters are drawn from a :class:`numpy.random.Generator` seeded by ``seed`` and the variant
index, then passed to each transform as a fixed range, so a variant is reproducible and does
not depend on how many other variants were asked for. audiomentations draws its noise from the
global NumPy generator; that generator is seeded per effect and restored afterwards.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

# Order in which effects are applied when a variant has several: the speaker's own changes
# first, then the room (noise), then the channel.
EFFECT_ORDER = ("time_stretch", "pitch_shift", "gain", "noise", "telephone")
MU_LAW_LEVELS = 256


@dataclass(frozen=True)
class AugmentConfig:
    """Which effects make augmented variants, and the ranges their parameters are drawn from.

    Every ``*_range`` holds ``[low, high]``; a parameter is drawn uniformly from it.
    """

    effects: tuple[str, ...] = EFFECT_ORDER
    max_effects_per_variant: int = 2
    noise_snr_db_range: tuple[float, ...] = (10.0, 30.0)
    gain_db_range: tuple[float, ...] = (-6.0, 6.0)
    time_stretch_rate_range: tuple[float, ...] = (0.9, 1.1)
    pitch_shift_semitones_range: tuple[float, ...] = (-2.0, 2.0)
    telephone_band_hz: tuple[float, ...] = (300.0, 3400.0)
    telephone_sample_rate_hz: int = 8000
    #: ``[low, high]`` dBFS of the line noise the telephone channel adds (RMS, before band-limiting,
    #: at an absolute level as a real line's: quiet speech gets a low SNR); empty: no line noise.
    telephone_noise_dbfs_range: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.effects:
            raise ValueError("augment.effects must name at least one effect")
        if unknown := set(self.effects) - set(EFFECT_ORDER):
            raise ValueError(f"augment.effects: unknown {sorted(unknown)}; use {list(EFFECT_ORDER)}")
        if len(set(self.effects)) != len(self.effects):
            raise ValueError("augment.effects must not repeat an effect")
        if self.max_effects_per_variant < 1:
            raise ValueError("augment.max_effects_per_variant must be at least 1")
        for name in (
            "noise_snr_db_range",
            "gain_db_range",
            "time_stretch_rate_range",
            "pitch_shift_semitones_range",
            "telephone_band_hz",
        ):
            bounds = getattr(self, name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"augment.{name} must be [low, high] with low <= high, got {list(bounds)}")
        noise = self.telephone_noise_dbfs_range
        if noise and (len(noise) != 2 or not noise[0] <= noise[1] < 0):
            raise ValueError(
                "augment.telephone_noise_dbfs_range must be empty (no line noise) or [low, high] dBFS with "
                f"low <= high < 0, got {list(noise)}"
            )
        if not 0.1 <= self.time_stretch_rate_range[0]:
            raise ValueError("augment.time_stretch_rate_range must stay above 0.1")
        low_hz, high_hz = self.telephone_band_hz
        if not 0 < low_hz < high_hz < self.telephone_sample_rate_hz / 2:
            raise ValueError(
                "augment.telephone_band_hz must lie inside (0, telephone_sample_rate_hz / 2), "
                f"got {list(self.telephone_band_hz)} at {self.telephone_sample_rate_hz} Hz"
            )


def augment_variants(
    waveform: np.ndarray,
    sample_rate: int,
    config: AugmentConfig,
    *,
    n_variants: int,
    seed: int,
) -> list[tuple[str, np.ndarray]]:
    """Make ``n_variants`` augmented copies of one clip.

    Variant ``k`` always gets ``config.effects[(offset + k) % n_effects]`` (``offset`` drawn
    from ``seed``), so the variants of a clip cover the effects evenly, plus up to
    ``max_effects_per_variant - 1`` further effects chosen at random.

    Parameters
    ----------
    waveform
        Mono waveform, shape ``[n_samples]``, float, nominally in ``[-1, 1]``.
    sample_rate
        Sample rate of ``waveform`` in Hz (must exceed twice the telephone band's upper edge
        when ``telephone`` is among the effects).
    config
        Effects and parameter ranges.
    n_variants
        Number of variants to return (0 gives an empty list).
    seed
        Seed; the same seed, waveform and config give the same variants. Use a per-clip seed
        (e.g. from the clip id) so that clips do not share noise.

    Returns
    -------
    list of (tag, waveform)
        ``tag`` names the effects and their parameters, e.g. ``"gain+3.1db+noise_snr17"``;
        ``waveform`` is float32 of shape ``[n_samples]``, except after ``time_stretch``, which
        changes the length to about ``n_samples / rate`` (the fix-duration step follows).
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"augment_variants needs a mono waveform of shape [n], got shape {samples.shape}")
    if n_variants < 0:
        raise ValueError(f"n_variants must be >= 0, got {n_variants}")
    if samples.size == 0 or n_variants == 0:
        return []
    offset = int(np.random.default_rng([seed, 2**31]).integers(len(config.effects)))
    variants = []
    for index in range(n_variants):
        rng = np.random.default_rng([seed, index])
        effects = _choose_effects(config, primary=config.effects[(offset + index) % len(config.effects)], rng=rng)
        variants.append(_apply_effects(samples, sample_rate, config, effects, rng))
    return variants


def _choose_effects(config: AugmentConfig, *, primary: str, rng: np.random.Generator) -> list[str]:
    others = [effect for effect in config.effects if effect != primary]
    n_extra = int(rng.integers(0, min(config.max_effects_per_variant - 1, len(others)) + 1))
    extra = list(rng.choice(others, size=n_extra, replace=False)) if n_extra else []
    chosen = {primary, *extra}
    return [effect for effect in EFFECT_ORDER if effect in chosen]


def _apply_effects(
    samples: np.ndarray,
    sample_rate: int,
    config: AugmentConfig,
    effects: list[str],
    rng: np.random.Generator,
) -> tuple[str, np.ndarray]:
    from audiomentations import AddGaussianSNR, Gain, PitchShift, TimeStretch

    tags = []
    for effect in effects:
        effect_seed = int(rng.integers(2**32))
        if effect == "time_stretch":
            rate = float(rng.uniform(*config.time_stretch_rate_range))
            transform = TimeStretch(min_rate=rate, max_rate=rate, leave_length_unchanged=False, p=1.0)
            tags.append(f"stretch{rate:.2f}")
        elif effect == "pitch_shift":
            semitones = float(rng.uniform(*config.pitch_shift_semitones_range))
            transform = PitchShift(min_semitones=semitones, max_semitones=semitones, p=1.0)
            tags.append(f"pitch{semitones:+.1f}")
        elif effect == "gain":
            gain_db = float(rng.uniform(*config.gain_db_range))
            transform = Gain(min_gain_db=gain_db, max_gain_db=gain_db, p=1.0)
            tags.append(f"gain{gain_db:+.1f}db")
        elif effect == "noise":
            snr_db = float(rng.uniform(*config.noise_snr_db_range))
            transform = AddGaussianSNR(min_snr_db=snr_db, max_snr_db=snr_db, p=1.0)
            tags.append(f"noise_snr{snr_db:.0f}")
        else:
            noise_range = config.telephone_noise_dbfs_range
            noise_dbfs = float(rng.uniform(*noise_range)) if noise_range else None
            samples = telephone_channel(
                samples,
                sample_rate,
                band_hz=(config.telephone_band_hz[0], config.telephone_band_hz[1]),
                channel_sample_rate_hz=config.telephone_sample_rate_hz,
                noise_dbfs=noise_dbfs,
                rng=np.random.default_rng(effect_seed),
            )
            tags.append("telephone" if noise_dbfs is None else f"telephone_noise{noise_dbfs:.0f}db")
            continue
        with _global_random_seeded(effect_seed):
            samples = np.asarray(transform(samples, sample_rate=sample_rate), dtype=np.float32)
    return "+".join(tags), samples


def telephone_channel(
    waveform: np.ndarray,
    sample_rate: int,
    *,
    band_hz: tuple[float, float] = (300.0, 3400.0),
    channel_sample_rate_hz: int = 8000,
    noise_dbfs: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Simulate a narrow-band telephone line: line noise, band-limit, 8-bit µ-law at 8 kHz, and back.

    Parameters
    ----------
    waveform
        Mono waveform ``[n_samples]``.
    sample_rate
        Its sample rate in Hz; must exceed ``2 * band_hz[1]``.
    band_hz
        Pass band ``(low, high)`` of the line in Hz.
    channel_sample_rate_hz
        Sample rate of the codec (G.711 uses 8000 Hz).
    noise_dbfs
        RMS level in dBFS of white Gaussian line noise added before band-limiting, at an absolute
        level (not relative to the speech, as a line's noise is not); ``None``: none.
    rng
        Draws the noise (required with ``noise_dbfs``).

    Returns
    -------
    np.ndarray
        float32 ``[n_samples]`` at ``sample_rate``.
    """
    from audiomentations import HighPassFilter, LowPassFilter
    from scipy.signal import resample_poly  # heavy import (about 1 s), only where needed

    low_hz, high_hz = band_hz
    if sample_rate <= 2 * high_hz:
        raise ValueError(f"telephone_channel needs a sample rate above {2 * high_hz:g} Hz, got {sample_rate}")
    samples = np.asarray(waveform, dtype=np.float32)
    if noise_dbfs is not None:
        if rng is None:
            raise ValueError("telephone_channel needs rng to draw line noise")
        samples = samples + (rng.standard_normal(samples.size) * 10 ** (noise_dbfs / 20)).astype(np.float32)
    # Fixed cut-offs and 24 dB/octave roll-off: the transforms draw nothing at random.
    high_pass = HighPassFilter(min_cutoff_freq=low_hz, max_cutoff_freq=low_hz, min_rolloff=24, max_rolloff=24, p=1.0)
    low_pass = LowPassFilter(min_cutoff_freq=high_hz, max_cutoff_freq=high_hz, min_rolloff=24, max_rolloff=24, p=1.0)
    samples = low_pass(high_pass(samples, sample_rate=sample_rate), sample_rate=sample_rate)
    common = math.gcd(sample_rate, channel_sample_rate_hz)
    up, down = channel_sample_rate_hz // common, sample_rate // common
    narrow = resample_poly(samples, up, down)
    narrow = mu_law_decode(mu_law_encode(narrow))
    restored = resample_poly(narrow, down, up)[: samples.size]
    return np.pad(restored, (0, samples.size - restored.size)).astype(np.float32)


def mu_law_encode(waveform: np.ndarray, levels: int = MU_LAW_LEVELS) -> np.ndarray:
    """Compand and quantise ``[-1, 1]`` samples to integer codes ``0 .. levels - 1`` (G.711 µ-law).

    Samples outside ``[-1, 1]`` are clipped, as a codec would.
    """
    mu = levels - 1
    clipped = np.clip(waveform, -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(mu * np.abs(clipped)) / np.log1p(mu)
    return np.rint((companded + 1.0) / 2.0 * mu).astype(np.int32)


def mu_law_decode(codes: np.ndarray, levels: int = MU_LAW_LEVELS) -> np.ndarray:
    """Inverse of :func:`mu_law_encode`: integer codes back to float samples in ``[-1, 1]``."""
    mu = levels - 1
    companded = codes.astype(np.float64) / mu * 2.0 - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(mu)) / mu).astype(np.float32)


@contextmanager
def _global_random_seeded(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global generators for one audiomentations call, then restore them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
