"""Frame-wise features of preprocessed clips: log-mel spectrogram, MFCCs, zero-crossing rate,
and a fixed-length summary-statistics vector.

One STFT per clip feeds both the log-mel spectrogram and the MFCCs. The numbers equal
librosa's (``librosa.feature.melspectrogram`` → ``power_to_db`` → ``librosa.feature.mfcc``,
``librosa.feature.zero_crossing_rate``) to float32 rounding; the functions take a batch of
clips so that scoring can compute many windows in one call.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

from ser_udfs.features.config import FeatureConfig, MelConfig, MfccConfig, StatsConfig, ZcrConfig

_AMIN = 1e-10


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies_hz: np.ndarray) -> np.ndarray:
    """Slaney mel of ``frequencies_hz`` (float64, any shape)."""
    frequencies_hz = np.asarray(frequencies_hz, dtype=np.float64)
    linear = frequencies_hz / _SLANEY_HZ_PER_MEL
    above = np.maximum(frequencies_hz, _SLANEY_LOG_START_HZ)
    logarithmic = _SLANEY_LOG_START_MEL + np.log(above / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(frequencies_hz >= _SLANEY_LOG_START_HZ, logarithmic, linear)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_LOG_START_MEL))
    return np.where(mels >= _SLANEY_LOG_START_MEL, logarithmic, linear)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """Slaney-normalised mel filterbank, float32 ``[n_mels, 1 + n_fft // 2]``.

    The same triangles as ``librosa.filters.mel(sr, n_fft=..., n_mels=..., fmin=..., fmax=...)``
    (Slaney mel scale, area normalisation), computed the same way so the weights match to the
    last bit, without importing librosa in every worker.
    """
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    widths_hz = np.diff(edges_hz)
    distance_hz = np.subtract.outer(edges_hz, bin_hz)  # [n_mels + 2, bins]
    rising = -distance_hz[:-2] / widths_hz[:-1, None]
    falling = distance_hz[2:] / widths_hz[1:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    bank = (bank * area[:, None]).astype(np.float32)
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=16)
def _stft_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", fftbins=True)``), centred in ``n_fft``."""
    window = (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, win_length + 1))[:win_length]).astype(np.float32)
    left = (n_fft - win_length) // 2
    padded = np.zeros(n_fft, dtype=np.float32)
    padded[left : left + win_length] = window
    padded.setflags(write=False)
    return padded


def frame_count(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT or ZCR of ``n_samples`` samples."""
    return 1 + n_samples // hop_length


def power_spectrogram(clips: np.ndarray, n_fft: int, win_length: int, hop_length: int) -> np.ndarray:
    """Power STFT of a batch, centred with zero padding (librosa's defaults).

    Parameters
    ----------
    clips
        float32 ``[batch, n]``.

    Returns
    -------
    float32 ``[batch, 1 + n_fft // 2, frames]`` with ``frames = 1 + n // hop_length``.
    """
    padded = np.pad(clips, ((0, 0), (n_fft // 2, n_fft // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop_length]
    spectrum = scipy.fft.rfft(frames * _stft_window(win_length, n_fft), axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    return np.ascontiguousarray(power.transpose(0, 2, 1), dtype=np.float32)


def power_to_db(power: np.ndarray, top_db: float | None) -> np.ndarray:
    """``10 log10(power)`` with ref 1.0, floored at ``max - top_db`` per clip.

    Parameters
    ----------
    power
        ``[batch, bins, frames]``.
    """
    log_power = 10.0 * np.log10(np.maximum(power, _AMIN))
    if top_db is not None:
        floor = log_power.max(axis=(1, 2), keepdims=True) - top_db
        log_power = np.maximum(log_power, floor)
    return log_power.astype(np.float32, copy=False)


def log_mel_spectrogram(clips: np.ndarray, sample_rate: int, config: MelConfig) -> np.ndarray:
    """Log-mel spectrogram in dB, float32 ``[batch, n_mels, frames]``."""
    power = power_spectrogram(clips, config.n_fft, config.win_length, config.hop_length)
    bank = mel_filterbank(sample_rate, config.n_fft, config.n_mels, config.fmin_hz, config.fmax_hz)
    mel_power = np.matmul(bank, power)
    return power_to_db(mel_power, config.top_db)


def mfcc_from_log_mel(log_mel: np.ndarray, config: MfccConfig) -> np.ndarray:
    """MFCCs (orthonormal type-II DCT over mel bands), optional first and second deltas.

    Parameters
    ----------
    log_mel
        ``[batch, n_mels, frames]`` in dB.

    Returns
    -------
    float32 ``[batch, n_mfcc * (3 if deltas else 1), frames]``.
    """
    coefficients = scipy.fft.dct(log_mel, axis=1, type=2, norm="ortho")[:, : config.n_mfcc]
    if config.deltas:
        import librosa

        width = min(config.delta_width, coefficients.shape[-1] - (1 - coefficients.shape[-1] % 2))
        delta = librosa.feature.delta(coefficients, width=width, order=1, axis=-1)
        delta2 = librosa.feature.delta(coefficients, width=width, order=2, axis=-1)
        coefficients = np.concatenate([coefficients, delta, delta2], axis=1)
    return coefficients.astype(np.float32, copy=False)


def zero_crossing_rate(clips: np.ndarray, config: ZcrConfig) -> np.ndarray:
    """Fraction of sign changes per centred frame (edge padding, librosa's rule).

    Returns
    -------
    float32 ``[batch, 1, frames]`` with ``frames = 1 + n // hop_length``.
    """
    half = config.frame_length // 2
    padded = np.pad(clips, ((0, 0), (half, half)), mode="edge")
    signs = np.signbit(np.where(np.abs(padded) <= 1e-10, 0.0, padded))
    changes = np.concatenate(
        [np.zeros((clips.shape[0], 1), dtype=np.int32), np.cumsum(signs[:, 1:] != signs[:, :-1], axis=1, dtype=np.int32)],
        axis=1,
    )
    starts = np.arange(frame_count(clips.shape[1], config.hop_length)) * config.hop_length
    counts = changes[:, starts + config.frame_length - 1] - changes[:, starts]
    return (counts / config.frame_length).astype(np.float32)[:, None, :]


_STAT_FUNCTIONS = {
    "mean": np.mean,
    "std": np.std,
    "min": np.min,
    "max": np.max,
    "median": np.median,
}


def summary_statistics(maps: dict[str, np.ndarray], config: StatsConfig) -> np.ndarray:
    """Per-coefficient statistics over time, concatenated.

    Parameters
    ----------
    maps
        ``{"mfcc": [batch, c, frames], "log_mel": [batch, m, frames], "zcr": [batch, 1, frames]}``.

    Returns
    -------
    float32 ``[batch, d]``: for each feature in ``config.features`` (in order), for each
    function in ``config.functions`` (in order), one value per coefficient.
    """
    parts = [
        _STAT_FUNCTIONS[function](maps[name], axis=-1)
        for name in config.features
        for function in config.functions
    ]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def stats_names(config: FeatureConfig) -> list[str]:
    """The name of each value of the ``stats`` vector, in order (:func:`summary_statistics`):
    ``<row>_<function>``, rows ``mfcc_<i>`` (``mfcc_delta_<i>``, ``mfcc_delta2_<i>`` with deltas),
    ``log_mel_<band>``, ``zcr``; e.g. ``mfcc_0_mean``, ``log_mel_63_std``, ``zcr_mean``."""
    n_mfcc = config.mfcc.n_mfcc
    mfcc = [f"mfcc_{i}" for i in range(n_mfcc)]
    if config.mfcc.deltas:
        mfcc += [f"mfcc_delta_{i}" for i in range(n_mfcc)] + [f"mfcc_delta2_{i}" for i in range(n_mfcc)]
    rows = {"mfcc": mfcc, "log_mel": [f"log_mel_{band}" for band in range(config.mel.n_mels)], "zcr": ["zcr"]}
    return [f"{row}_{function}" for name in config.stats.features for function in config.stats.functions
            for row in rows[name]]


def stats_length(config: FeatureConfig) -> int:
    """Length ``d`` of the ``stats`` vector for ``config``."""
    rows = {
        "mfcc": config.mfcc.n_mfcc * (3 if config.mfcc.deltas else 1),
        "log_mel": config.mel.n_mels,
        "zcr": 1,
    }
    return sum(rows[name] for name in config.stats.features) * len(config.stats.functions)


def compute_features_batch(clips: np.ndarray, sample_rate: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """All features of a batch of preprocessed clips.

    Parameters
    ----------
    clips
        float32 ``[batch, n]`` at ``sample_rate``.

    Returns
    -------
    ``{"log_mel": [batch, n_mels, frames], "mfcc": [batch, c, frames],
    "zcr": [batch, 1, frames_zcr], "stats": [batch, d]}``, and ``"egemaps": [batch, 88]`` when
    ``config.egemaps.enabled``.
    """
    if clips.ndim != 2:
        raise ValueError(f"clips must be [batch, n], got shape {clips.shape}")
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    log_mel = log_mel_spectrogram(clips, sample_rate, config.mel)
    maps = {
        "log_mel": log_mel,
        "mfcc": mfcc_from_log_mel(log_mel, config.mfcc),
        "zcr": zero_crossing_rate(clips, config.zcr),
    }
    maps["stats"] = summary_statistics(maps, config.stats)
    if config.egemaps.enabled:
        from ser_udfs.features.egemaps import egemaps_functionals  # openSMILE loads only when asked for

        maps["egemaps"] = egemaps_functionals(clips, sample_rate)
    return maps


def compute_features(clip: np.ndarray, sample_rate: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """All features of one preprocessed clip ``[n]``: the batch of one, without the batch axis."""
    return {name: value[0] for name, value in compute_features_batch(clip[None, :], sample_rate, config).items()}
