"""One audio file in, its feature rows out: the per-clip work of the extraction job.

Pure NumPy, no Spark: the Spark wrapper (:mod:`ser_udfs.spark_extract`) and the benchmarks
call :func:`extract_file` on each file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ser_udfs.augment import AugmentConfig, augment_variants
from ser_udfs.audio import AudioInfo, AudioSource, decode_audio
from ser_udfs.feature_config import AudioConfig, FeatureConfig, MelConfig, MfccConfig, StatsConfig, ZcrConfig
from ser_udfs.features import compute_features_batch
from ser_udfs.preprocess import condition_clip, to_mono_target_rate


@dataclass(frozen=True)
class ExtractOptions:
    """Per-run options that change which rows are written, not the feature values.

    Attributes
    ----------
    keep_waveform
        Also return the preprocessed waveform (for transformer models).
    augment_variants
        Number of augmented copies per clip (0: none).
    augment_config
        Effects and parameter ranges; used when ``augment_variants > 0``.
    augment_seed
        Base seed; each clip's copies are seeded from it and the clip id.
    """

    keep_waveform: bool = False
    augment_variants: int = 0
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    augment_seed: int = 0


@dataclass(frozen=True)
class ClipFeatures:
    """Features of one clip or one augmented copy (``augmentation`` names it)."""

    augmentation: str | None
    features: dict[str, np.ndarray]
    waveform: np.ndarray | None


def clip_id_for(path: str) -> str:
    """Stable id of a source file: the first 16 hex characters of the SHA-1 of its path."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def _variant_seed(base_seed: int, clip_id: str) -> int:
    return (base_seed * 1_000_003 + int(clip_id, 16)) % (2**32)


def extract_file(
    source: AudioSource, clip_id: str, config: FeatureConfig, options: ExtractOptions
) -> tuple[AudioInfo, list[ClipFeatures]]:
    """Decode, preprocess and featurise one file (and its augmented copies).

    Raises
    ------
    ser_udfs.errors.ClipError
        When the file cannot be used; the message says why.
    """
    decoded, info = decode_audio(source)
    mono = to_mono_target_rate(decoded, info.sample_rate, config.audio)
    del decoded
    sample_rate = config.audio.target_sample_rate_hz
    variants: list[tuple[str | None, np.ndarray]] = [(None, mono)]
    if options.augment_variants > 0:
        variants += augment_variants(
            mono,
            sample_rate,
            options.augment_config,
            n_variants=options.augment_variants,
            seed=_variant_seed(options.augment_seed, clip_id),
        )
    clips = np.stack([condition_clip(wave, config.audio) for _, wave in variants])
    features = compute_features_batch(clips, sample_rate, config)
    results = [
        ClipFeatures(
            augmentation=tag,
            features={name: values[index] for name, values in features.items()},
            waveform=clips[index] if options.keep_waveform else None,
        )
        for index, (tag, _) in enumerate(variants)
    ]
    return info, results


@dataclass(frozen=True)
class OutputSection:
    """``[output]`` of ``conf/features.toml``.

    ``writer``: ``python`` has the Python workers write the Parquet files with PyArrow (local
    outputs only), ``spark`` hands the rows to Spark's Parquet writer (any file system),
    ``auto`` picks ``python`` for local outputs. ``compression`` is the Parquet codec.
    """

    keep_waveform: bool = False
    rows_per_batch: int = 32
    writer: Literal["auto", "python", "spark"] = "auto"
    compression: Literal["snappy", "zstd", "gzip", "none"] = "snappy"

    def __post_init__(self) -> None:
        if self.rows_per_batch < 1:
            raise ValueError("output.rows_per_batch must be at least 1")


@dataclass(frozen=True)
class ReadSection:
    """``[read]`` of ``conf/features.toml``: how the workers get the bytes of each file.

    ``manifest_schemes`` lists URI schemes a manifest may use besides local paths and the
    manifest's own file system (see :func:`ser_udfs.path_checks.check_manifest_paths`).
    """

    mode: Literal["auto", "python", "spark"] = "auto"
    files_per_partition: int = 256
    manifest_schemes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.files_per_partition < 1:
            raise ValueError("read.files_per_partition must be at least 1")


@dataclass(frozen=True)
class AugmentSection:
    """``[augment]`` of ``conf/features.toml``: how many copies, and ``[augment.settings]``."""

    variants: int = 0
    seed: int = 0
    settings: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.variants < 0:
            raise ValueError("augment.variants (--augment) must be 0 or more")


@dataclass(frozen=True)
class ExtractJobConfig:
    """The whole config of the extraction job (``conf/features.toml``)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    mfcc: MfccConfig = field(default_factory=MfccConfig)
    zcr: ZcrConfig = field(default_factory=ZcrConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    output: OutputSection = field(default_factory=OutputSection)
    read: ReadSection = field(default_factory=ReadSection)
    augment: AugmentSection = field(default_factory=AugmentSection)

    @property
    def features(self) -> FeatureConfig:
        """The part of the config that decides feature values."""
        return FeatureConfig(audio=self.audio, mel=self.mel, mfcc=self.mfcc, zcr=self.zcr, stats=self.stats)

    @property
    def options(self) -> ExtractOptions:
        """The part that decides which rows are written."""
        return ExtractOptions(
            keep_waveform=self.output.keep_waveform,
            augment_variants=self.augment.variants,
            augment_config=self.augment.settings,
            augment_seed=self.augment.seed,
        )
