"""Speech-like synthetic emotional audio, for the demo corpus and for tests.

The repository ships no third-party recordings, so ``make demo`` and the tests synthesise
speech-like clips with a small source-filter model:

* source: a Rosenberg glottal pulse train at a time-varying pitch (declination, pitch accents,
  optional terminal rise, tremor and jitter), per-period shimmer, a one-pole spectral tilt and
  pulsed aspiration noise;
* syllables: a syllable-rate amplitude envelope of voiced nuclei with noisy consonant onsets and
  short pauses between words, and a little leading and trailing silence;
* filter: a cascade of three formant resonators per vowel, cross-faded from syllable to syllable.

Emotions (:data:`EMOTION_PROFILES`) move mean pitch, pitch range, loudness, speaking rate,
spectral tilt, tremor, creak and breathiness; speakers (from ``speaker_seed``) differ in base
pitch, formant scaling, tempo and breathiness; every utterance draws its own small deviations, so
a speaker-independent classifier can learn the emotion, but not perfectly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmotionProfile:
    """How an emotion shifts a speaker's voice (all relative to that speaker's neutral voice)."""

    pitch_factor: float  # mean f0 as a multiple of the speaker's base f0
    pitch_range_st: float  # height of pitch accents, semitones
    final_rise_st: float  # terminal rise (> 0) or fall (< 0), semitones
    tremor_depth: float  # relative f0 modulation at about 6.5 Hz
    jitter: float  # relative random f0 perturbation
    shimmer: float  # relative random amplitude perturbation per glottal period (creak)
    level_db: float  # loudness, dB relative to neutral
    syllable_rate_hz: float  # syllables per second
    tilt_pole: float  # pole of a one-pole low-pass on the source: 0 flat, towards 1 steeper
    closing_quotient: float  # share of the open phase spent closing: short = pressed and bright
    breathiness: float  # aspiration noise relative to the voiced source


EMOTION_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(1.00, 2.0, -1.5, 0.000, 0.006, 0.04, 0.0, 4.0, 0.60, 0.35, 0.06),
    "calm": EmotionProfile(0.93, 1.5, -2.0, 0.000, 0.005, 0.03, -3.0, 3.4, 0.70, 0.40, 0.10),
    "happy": EmotionProfile(1.30, 6.0, 1.0, 0.000, 0.008, 0.04, 4.0, 4.7, 0.40, 0.28, 0.06),
    "sad": EmotionProfile(0.85, 1.2, -2.5, 0.006, 0.010, 0.06, -8.0, 2.8, 0.85, 0.45, 0.16),
    "angry": EmotionProfile(1.22, 4.0, -3.0, 0.000, 0.012, 0.06, 9.0, 5.2, 0.10, 0.15, 0.04),
    "fear": EmotionProfile(1.42, 3.0, 1.5, 0.045, 0.020, 0.08, 1.0, 5.4, 0.50, 0.30, 0.18),
    "disgust": EmotionProfile(0.80, 3.0, -4.0, 0.000, 0.035, 0.30, -1.0, 3.0, 0.72, 0.38, 0.08),
    "surprise": EmotionProfile(1.35, 7.0, 5.0, 0.000, 0.008, 0.04, 3.0, 4.5, 0.45, 0.28, 0.08),
    "boredom": EmotionProfile(0.86, 0.8, -1.0, 0.000, 0.006, 0.05, -5.0, 3.0, 0.80, 0.42, 0.12),
}

#: RAVDESS emotion codes of the emotions that :func:`write_demo_corpus` can name.
_RAVDESS_EMOTION_CODES = {
    "neutral": "01",
    "calm": "02",
    "happy": "03",
    "sad": "04",
    "angry": "05",
    "fear": "06",
    "disgust": "07",
    "surprise": "08",
}

#: F1, F2, F3 of five vowels for an adult male voice, Hz; rows a, e, i, o, u.
_VOWEL_FORMANTS_HZ = np.array(
    [
        [730.0, 1090.0, 2440.0],
        [530.0, 1840.0, 2480.0],
        [270.0, 2290.0, 3010.0],
        [570.0, 840.0, 2410.0],
        [300.0, 870.0, 2240.0],
    ]
)
_FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0])
_REFERENCE_RMS_DB = -26.0  # neutral speech level, dBFS
_NOISE_FLOOR_DB = -90.0
_PITCH_CONTROL_RATE_HZ = 200.0
_OPEN_QUOTIENT = 0.6
_VOWEL_FADE_S = 0.02
_STRONG_LEVEL_DB = 4.0
_SPEAKER_STREAM, _UTTERANCE_STREAM = 1, 2


@dataclass(frozen=True)
class _Voice:
    """A synthetic speaker's fixed traits."""

    base_f0_hz: float
    formant_scale: float
    rate_factor: float
    breathiness_factor: float


def _speaker_voice(speaker_seed: int, female: bool) -> _Voice:
    """Draw a speaker's traits from its seed; women get higher pitch and formants."""
    rng = np.random.default_rng([_SPEAKER_STREAM, speaker_seed])
    f0_low, f0_high, scale_low, scale_high = (175.0, 235.0, 1.12, 1.22) if female else (95.0, 135.0, 0.94, 1.04)
    return _Voice(
        base_f0_hz=rng.uniform(f0_low, f0_high),
        formant_scale=rng.uniform(scale_low, scale_high),
        rate_factor=rng.uniform(0.9, 1.1),
        breathiness_factor=rng.uniform(0.6, 1.5),
    )


def _syllable_layout(
    rng: np.random.Generator, start_s: float, end_s: float, rate_hz: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Syllable onsets and lengths in seconds, and whether each one starts a word (is stressed).

    Returns
    -------
    onsets_s, lengths_s, stressed
        Arrays of shape ``[n_syllables]``, ``n_syllables >= 1``.
    """
    onsets, lengths, stressed = [], [], []
    time_s = start_s
    while True:
        for position in range(int(rng.integers(1, 4))):
            length_s = rng.uniform(0.7, 1.3) / rate_hz
            if time_s + length_s > end_s:
                if not onsets:
                    return np.array([start_s]), np.array([end_s - start_s]), np.array([True])
                return np.array(onsets), np.array(lengths), np.array(stressed)
            onsets.append(time_s)
            lengths.append(length_s)
            stressed.append(position == 0)
            time_s += length_s
        time_s += rng.uniform(0.03, 0.12) * 4.0 / rate_hz


def _pitch_contour_hz(
    rng: np.random.Generator,
    profile: EmotionProfile,
    mean_f0_hz: float,
    range_st: float,
    onsets_s: np.ndarray,
    lengths_s: np.ndarray,
    stressed: np.ndarray,
    duration_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """f0 at the control rate.

    Returns
    -------
    times_s, f0_hz
        Arrays of shape ``[n_control]``.
    """
    times_s = np.arange(int(duration_s * _PITCH_CONTROL_RATE_HZ) + 2) / _PITCH_CONTROL_RATE_HZ
    speech_start, speech_end = onsets_s[0], onsets_s[-1] + lengths_s[-1]
    progress = np.clip((times_s - speech_start) / (speech_end - speech_start), 0.0, 1.0)
    semitones = range_st * 0.4 * (0.5 - progress)  # declination
    centres = onsets_s[stressed] + 0.6 * lengths_s[stressed]
    widths = 0.5 * lengths_s[stressed]
    heights = range_st * rng.uniform(0.4, 1.0, size=centres.size)
    accents = heights[:, None] * np.exp(-0.5 * ((times_s - centres[:, None]) / widths[:, None]) ** 2)  # [n_accents, n]
    semitones = semitones + accents.sum(0)
    final = np.clip((progress - 0.75) / 0.25, 0.0, 1.0)
    semitones = semitones + profile.final_rise_st * final * final * (3.0 - 2.0 * final)
    tremor = profile.tremor_depth * np.sin(2.0 * np.pi * rng.uniform(5.5, 7.5) * times_s + rng.uniform(0, 2 * np.pi))
    jitter = profile.jitter * rng.standard_normal(times_s.size)
    return times_s, mean_f0_hz * 2.0 ** (semitones / 12.0) * (1.0 + tremor + jitter)


def _glottal_source(
    rng: np.random.Generator, f0_hz: np.ndarray, sample_rate: int, closing_quotient: float, shimmer: float
) -> tuple[np.ndarray, np.ndarray]:
    """Differentiated Rosenberg pulse train and the glottal flow itself.

    Returns
    -------
    source, flow
        Arrays of shape ``[n]`` like ``f0_hz``.
    """
    phase = np.cumsum(f0_hz / sample_rate) + rng.uniform()
    period = np.floor(phase).astype(np.int64)
    fraction = phase - period
    closing = _OPEN_QUOTIENT * closing_quotient
    opening = _OPEN_QUOTIENT - closing
    flow = np.where(
        fraction < opening,
        0.5 * (1.0 - np.cos(np.pi * fraction / opening)),
        np.where(fraction < _OPEN_QUOTIENT, np.cos(0.5 * np.pi * (fraction - opening) / closing), 0.0),
    )
    period_gain = np.clip(1.0 + shimmer * rng.standard_normal(period[-1] - period[0] + 1), 0.1, None)
    flow = flow * period_gain[period - period[0]]
    return np.diff(flow, prepend=flow[0]), flow


def _resonator(frequency_hz: float, bandwidth_hz: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator with unit gain at 0 Hz, as ``(b, a)`` for :func:`scipy.signal.lfilter`."""
    radius = np.exp(-np.pi * bandwidth_hz / sample_rate)
    a = np.array([1.0, -2.0 * radius * np.cos(2.0 * np.pi * frequency_hz / sample_rate), radius * radius])
    return np.array([a.sum()]), a


def _vowel_filter(formants_hz: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Cascade of formant resonators as one ``(b, a)`` pair."""
    b, a = np.ones(1), np.ones(1)
    for frequency_hz, bandwidth_hz in zip(np.minimum(formants_hz, 0.45 * sample_rate), _FORMANT_BANDWIDTHS_HZ):
        b_k, a_k = _resonator(frequency_hz, bandwidth_hz, sample_rate)
        b, a = np.convolve(b, b_k), np.convolve(a, a_k)
    return b, a


def _syllable_envelopes(
    rng: np.random.Generator, times_s: np.ndarray, onsets_s: np.ndarray, lengths_s: np.ndarray, stressed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample syllable index and the voiced-nucleus and consonant-onset envelopes.

    Parameters
    ----------
    times_s
        Sample times, shape ``[n]``.
    onsets_s, lengths_s, stressed
        The syllable layout, shape ``[n_syllables]``.

    Returns
    -------
    syllable, voiced, consonant
        Shape ``[n]`` each: the syllable a sample belongs to (the nearest earlier one in pauses)
        and two envelopes in ``[0, 1]``, zero in pauses and the leading and trailing silence.
    """
    syllable = np.clip(np.searchsorted(onsets_s, times_s, side="right") - 1, 0, onsets_s.size - 1)
    position = (times_s - onsets_s[syllable]) / lengths_s[syllable]
    inside = (position >= 0.0) & (position < 1.0)
    gain = np.where(stressed, 1.0, rng.uniform(0.55, 0.9, size=stressed.size))[syllable]
    nucleus = np.clip((position - 0.2) / 0.8, 0.0, 1.0)
    voiced = np.where(inside, np.sin(np.pi * nucleus) ** 0.6, 0.0) * gain
    onset = np.clip(position / 0.28, 0.0, 1.0)
    consonant = np.where(inside & (position < 0.28), np.sin(np.pi * onset), 0.0) * gain
    return syllable, voiced, consonant


def _vocal_tract(
    excitation: np.ndarray,
    vowels: np.ndarray,
    syllable: np.ndarray,
    since_onset_s: np.ndarray,
    voice: _Voice,
    sample_rate: int,
) -> np.ndarray:
    """Filter the excitation through each syllable's vowel, cross-fading from the previous one.

    Parameters
    ----------
    excitation, syllable, since_onset_s
        Shape ``[n]``: source samples, the syllable each sample belongs to, and time since that
        syllable's onset.
    vowels
        Row of ``_VOWEL_FORMANTS_HZ`` for each syllable, shape ``[n_syllables]``.

    Returns
    -------
    np.ndarray
        Shape ``[n]``.
    """
    used, syllable_rows = np.unique(vowels, return_inverse=True)
    filters = [_vowel_filter(_VOWEL_FORMANTS_HZ[vowel] * voice.formant_scale, sample_rate) for vowel in used]
    filtered = np.stack([signal.lfilter(b, a, excitation) for b, a in filters])  # [n_used, n]
    fade = np.clip(since_onset_s / _VOWEL_FADE_S, 0.0, 1.0)
    columns = np.arange(excitation.size)
    current = filtered[syllable_rows[syllable], columns]
    previous = filtered[syllable_rows[np.maximum(syllable - 1, 0)], columns]
    return fade * current + (1.0 - fade) * previous


def synth_utterance(
    emotion: str,
    *,
    speaker_seed: int,
    utterance_seed: int,
    sample_rate: int = 16000,
    duration_s: float = 2.5,
    female: bool = False,
    strong: bool = False,
) -> np.ndarray:
    """Synthesise one speech-like utterance in an emotion.

    Parameters
    ----------
    emotion
        A key of :data:`EMOTION_PROFILES`.
    speaker_seed, utterance_seed
        Non-negative ints; the same seeds (and other arguments) give the same samples. The voice
        depends on ``speaker_seed`` and ``female`` only; ``utterance_seed`` draws syllables,
        vowels, accents and the utterance's deviations from the emotion profile.
    sample_rate
        Hz.
    duration_s
        Length of the clip including its leading and trailing silence.
    female
        Higher base pitch and formants.
    strong
        Strong emotional intensity: louder, wider pitch range, slightly higher pitch.

    Returns
    -------
    np.ndarray
        float32 samples, shape ``[round(duration_s * sample_rate)]``, peak at most 1.
    """
    if emotion not in EMOTION_PROFILES:
        raise ValueError(f"unknown emotion {emotion!r}; choose one of {sorted(EMOTION_PROFILES)}")
    n_samples = int(round(duration_s * sample_rate))
    if n_samples < sample_rate // 10:
        raise ValueError(f"duration_s={duration_s} is too short; ask for at least 0.1 s")
    profile = EMOTION_PROFILES[emotion]
    voice = _speaker_voice(speaker_seed, female)
    rng = np.random.default_rng([_UTTERANCE_STREAM, speaker_seed, utterance_seed])

    mean_f0_hz = voice.base_f0_hz * profile.pitch_factor * np.exp(rng.normal(0.0, 0.06)) * (1.05 if strong else 1.0)
    range_st = profile.pitch_range_st * np.exp(rng.normal(0.0, 0.2)) * (1.3 if strong else 1.0)
    level_db = profile.level_db + rng.normal(0.0, 1.5) + (_STRONG_LEVEL_DB if strong else 0.0)
    rate_hz = profile.syllable_rate_hz * voice.rate_factor * np.exp(rng.normal(0.0, 0.08))
    tilt_pole = float(np.clip(profile.tilt_pole + rng.normal(0.0, 0.04), 0.0, 0.95))

    margin_s = min(0.25, 0.2 * duration_s)
    lead_s, trail_s = rng.uniform(0.3 * margin_s, margin_s, size=2)
    onsets_s, lengths_s, stressed = _syllable_layout(rng, lead_s, duration_s - trail_s, rate_hz)

    times_s = np.arange(n_samples) / sample_rate
    control_s, control_f0_hz = _pitch_contour_hz(
        rng, profile, mean_f0_hz, range_st, onsets_s, lengths_s, stressed, duration_s
    )
    f0_hz = np.clip(np.interp(times_s, control_s, control_f0_hz), 50.0, 0.2 * sample_rate)
    source, flow = _glottal_source(rng, f0_hz, sample_rate, profile.closing_quotient, profile.shimmer)
    aspiration = np.diff(rng.standard_normal(n_samples + 1)) * (0.4 + flow)
    breath = profile.breathiness * voice.breathiness_factor
    source = source + breath * np.std(source) / np.std(aspiration) * aspiration
    source = signal.lfilter([1.0 - tilt_pole], [1.0, -tilt_pole], source)

    syllable, voiced_envelope, consonant_envelope = _syllable_envelopes(rng, times_s, onsets_s, lengths_s, stressed)
    vowels = rng.integers(0, len(_VOWEL_FORMANTS_HZ), size=onsets_s.size)
    speech = _vocal_tract(source * voiced_envelope, vowels, syllable, times_s - onsets_s[syllable], voice, sample_rate)
    hiss_b, hiss_a = signal.butter(2, min(2500.0, 0.4 * sample_rate), btype="highpass", fs=sample_rate)
    hiss = signal.lfilter(hiss_b, hiss_a, rng.standard_normal(n_samples)) * consonant_envelope
    voiced_rms = np.sqrt(np.mean(speech[voiced_envelope > 0.1] ** 2))
    speech = speech + 0.05 * (1.2 - tilt_pole) * voiced_rms / (np.std(hiss) + 1e-12) * hiss

    target_rms = 10.0 ** ((_REFERENCE_RMS_DB + level_db) / 20.0)
    speech = speech * (target_rms / np.sqrt(np.mean(speech[voiced_envelope > 0.1] ** 2)))
    speech = speech + 10.0 ** (_NOISE_FLOOR_DB / 20.0) * rng.standard_normal(n_samples)
    peak = np.max(np.abs(speech))
    if peak > 0.99:
        speech = speech * (0.99 / peak)
    return speech.astype(np.float32)


def write_demo_corpus(
    out_dir: str | Path,
    *,
    n_actors: int = 6,
    statements: int = 2,
    repetitions: int = 2,
    sample_rate: int = 16000,
    emotions: Sequence[str] | None = None,
    fmt: str = "WAV",
) -> list[Path]:
    """Write a synthetic corpus laid out and named like RAVDESS speech.

    Files are ``out_dir/Actor_AA/03-01-EE-II-SS-RR-AA.<fmt>``: odd actors male, even female;
    intensity ``02`` is louder with a wider pitch range. Like RAVDESS there is no strong neutral,
    so each actor has ``(2 * len(emotions) - has_neutral) * statements * repetitions`` clips
    (360 in all with the defaults). Existing files are overwritten; rerunning gives the same bytes.

    Parameters
    ----------
    out_dir
        Folder to write into (created when missing).
    n_actors
        1 to 24.
    statements, repetitions
        1 or 2 each, as in RAVDESS.
    sample_rate
        Hz.
    emotions
        Subset of the eight RAVDESS emotions (canonical names); default all eight.
    fmt
        A ``soundfile`` container format such as ``"WAV"`` or ``"FLAC"``; the file extension is
        its lower-case name. WAV and FLAC are written as 16-bit PCM.

    Returns
    -------
    list[Path]
        The written files, sorted.
    """
    chosen = tuple(emotions) if emotions is not None else tuple(_RAVDESS_EMOTION_CODES)
    unnamed = [emotion for emotion in chosen if emotion not in _RAVDESS_EMOTION_CODES]
    if unnamed:
        raise ValueError(f"emotions {unnamed} have no RAVDESS code; choose from {list(_RAVDESS_EMOTION_CODES)}")
    limits = (("n_actors", n_actors, 24), ("statements", statements, 2), ("repetitions", repetitions, 2))
    for name, value, high in limits:
        if not 1 <= value <= high:
            raise ValueError(f"{name}={value} cannot be named like RAVDESS; use 1 to {high}")
    subtype = "PCM_16" if fmt.upper() in ("WAV", "FLAC") else None
    root = Path(out_dir)
    written = []
    for actor in range(1, n_actors + 1):
        actor_dir = root / f"Actor_{actor:02d}"
        actor_dir.mkdir(parents=True, exist_ok=True)
        for emotion in chosen:
            code = _RAVDESS_EMOTION_CODES[emotion]
            for intensity in (1,) if emotion == "neutral" else (1, 2):
                for statement in range(1, statements + 1):
                    for repetition in range(1, repetitions + 1):
                        samples = synth_utterance(
                            emotion,
                            speaker_seed=actor,
                            utterance_seed=int(f"{code}{intensity}{statement}{repetition}"),
                            sample_rate=sample_rate,
                            female=actor % 2 == 0,
                            strong=intensity == 2,
                        )
                        stem = f"03-01-{code}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
                        path = actor_dir / f"{stem}.{fmt.lower()}"
                        sf.write(path, samples, sample_rate, format=fmt, subtype=subtype)
                        written.append(path)
    logger.info("wrote %d synthetic clips to %s", len(written), root)
    return sorted(written)
