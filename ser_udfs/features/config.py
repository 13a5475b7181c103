"""The feature configuration: one frozen dataclass per processing step.

The same :class:`FeatureConfig` travels with the data: extraction writes it next to the table,
training copies it into the model bundle, and scoring refuses a bundle whose feature config
differs from what it computes. :meth:`FeatureConfig.version` names it in a few characters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ser_udfs.settings import apply_overrides, from_dict, load_toml, to_dict


@dataclass(frozen=True)
class AudioConfig:
    """Decode-to-clip preprocessing: resample, normalise, trim silence, fix the duration."""

    target_sample_rate_hz: int = 16000
    resample_quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = "HQ"
    peak_normalise: bool = True
    peak_level: float = 0.99
    trim_silence: bool = True
    trim_top_db: float = 30.0
    trim_frame_length: int = 1024
    trim_hop_length: int = 256
    clip_seconds: float = 3.0
    align: Literal["centre", "start"] = "centre"
    min_duration_s: float = 0.05
    silence_peak: float = 1e-4

    def __post_init__(self) -> None:
        if self.target_sample_rate_hz <= 0:
            raise ValueError("target_sample_rate_hz must be positive")
        if self.clip_seconds <= 0:
            raise ValueError("clip_seconds must be positive")
        if not 0 < self.peak_level <= 1:
            raise ValueError("peak_level must be in (0, 1]")

    @property
    def clip_samples(self) -> int:
        """Number of samples of a preprocessed clip."""
        return int(round(self.clip_seconds * self.target_sample_rate_hz))


@dataclass(frozen=True)
class MelConfig:
    """Log-mel spectrogram (power mel, then dB)."""

    n_mels: int = 128
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 512
    fmin_hz: float = 0.0
    fmax_hz: float = 8000.0
    top_db: float = 80.0

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError("mel.win_length must not exceed mel.n_fft")
        if self.n_mels <= 0 or self.hop_length <= 0:
            raise ValueError("mel.n_mels and mel.hop_length must be positive")


@dataclass(frozen=True)
class MfccConfig:
    """MFCCs: type-II orthonormal DCT of the log-mel spectrogram, optional deltas."""

    n_mfcc: int = 13
    deltas: bool = False
    delta_width: int = 9


@dataclass(frozen=True)
class ZcrConfig:
    """Frame-wise zero-crossing rate."""

    frame_length: int = 2048
    hop_length: int = 512


@dataclass(frozen=True)
class StatsConfig:
    """Which frame-wise features are summarised into the fixed-length ``stats`` vector."""

    features: tuple[str, ...] = ("mfcc", "log_mel", "zcr")
    functions: tuple[str, ...] = ("mean", "std")

    def __post_init__(self) -> None:
        allowed_features = {"mfcc", "log_mel", "zcr"}
        allowed_functions = {"mean", "std", "min", "max", "median"}
        if unknown := set(self.features) - allowed_features:
            raise ValueError(f"stats.features: unknown {sorted(unknown)}; use {sorted(allowed_features)}")
        if unknown := set(self.functions) - allowed_functions:
            raise ValueError(f"stats.functions: unknown {sorted(unknown)}; use {sorted(allowed_functions)}")


@dataclass(frozen=True)
class EgemapsConfig:
    """``[egemaps]``: whether the table gets the openSMILE eGeMAPS v02 functionals (``egemaps``, 88
    values per clip, :mod:`ser_udfs.features.egemaps`), computed on the preprocessed clip."""

    enabled: bool = False


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the numbers in a features table."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    mfcc: MfccConfig = field(default_factory=MfccConfig)
    zcr: ZcrConfig = field(default_factory=ZcrConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    egemaps: EgemapsConfig = field(default_factory=EgemapsConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable). Without ``egemaps`` while it is off, so a config
        without eGeMAPS keeps the :meth:`version` it had before the section existed."""
        data = to_dict(self)
        if not self.egemaps.enabled:
            del data["egemaps"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        return from_dict(cls, data)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "FeatureConfig":
        """The feature sections (``[audio]``, ``[mel]``, ``[mfcc]``, ``[zcr]``, ``[stats]``, ``[egemaps]``) of a TOML
        file such as ``conf/features.toml`` (its other sections, the job's own, are left out), with
        ``section.key=value`` overrides as ``--set`` takes them."""
        data = apply_overrides(load_toml(path), overrides)
        sections = {section.name for section in fields(cls)}
        return from_dict(cls, {name: values for name, values in data.items() if name in sections})

    def version(self) -> str:
        """First 12 hex characters of the SHA-1 of the canonical JSON of this config."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    def describe_difference(self, other: "FeatureConfig") -> list[str]:
        """Human-readable list of the settings in which ``other`` differs from ``self``."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [
            f"{key}: {mine.get(key)!r} here, {theirs.get(key)!r} there"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
