"""One audio file in, its feature rows out: the per-clip work of the extraction job.

Pure NumPy, no Spark: the Spark wrapper (:mod:`ser_udfs.spark.extract`) and the benchmarks
call :func:`extract_file` on each file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from ser_udfs.audio.augment import AugmentConfig, augment_variants
from ser_udfs.audio.decode import AudioInfo, AudioSource, decode_audio, read_info, stream_audio_blocks
from ser_udfs.features.config import FeatureConfig
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.audio.preprocess import condition_clip, preprocess_streamed, to_mono_target_rate

#: Files longer than this (by their header), without augmentation, are preprocessed streamed
#: (:func:`~ser_udfs.audio.preprocess.preprocess_streamed`), so memory stays flat in file length.
STREAMED_ABOVE_S = 60.0
#: Length of the blocks the streamed path decodes.
STREAM_BLOCK_S = 10.0
#: Files smaller than this are decoded whole without reading their header first (a header read
#: costs about a tenth of a short clip's work; a file this small decodes to a few tens of MB at most).
STREAMED_ABOVE_BYTES = 1 << 20


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

    Files longer than :data:`STREAMED_ABOVE_S` (given as a path or bytes, without augmentation)
    are decoded in blocks, three times, and never held whole; their rows equal the whole-signal
    path's to float32 rounding.

    Raises
    ------
    ser_udfs.errors.ClipError
        When the file cannot be used; the message says why.
    """
    sample_rate = config.audio.target_sample_rate_hz
    if options.augment_variants == 0 and _encoded_size(source) > STREAMED_ABOVE_BYTES:
        header = read_info(source)
        if header.duration_s > STREAMED_ABOVE_S:
            block_frames = max(1, int(STREAM_BLOCK_S * header.sample_rate))
            clip, frames = preprocess_streamed(
                lambda: (block for block, _ in stream_audio_blocks(source, block_frames=block_frames)),
                header.sample_rate, config.audio,
            )
            info = AudioInfo(header.sample_rate, header.channels, frames, header.subtype)
            return info, _featurise([None], clip[None], config, options)
    decoded, info = decode_audio(source)
    mono = to_mono_target_rate(decoded, info.sample_rate, config.audio)
    del decoded
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
    return info, _featurise([tag for tag, _ in variants], clips, config, options)


def _encoded_size(source: AudioSource) -> int:
    """Bytes of a file given as a path or as bytes; 0 for file objects and paths that cannot be stat'ed
    (those are decoded whole, and a path that cannot be read fails there with its own message)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, str):
        try:
            return os.path.getsize(source)
        except OSError:
            return 0
    return 0


def _featurise(
    tags: list[str | None], clips: np.ndarray, config: FeatureConfig, options: ExtractOptions
) -> list[ClipFeatures]:
    """The features of ``clips`` (float32 ``[len(tags), clip_samples]``), one per augmentation tag."""
    features = compute_features_batch(clips, config.audio.target_sample_rate_hz, config)
    return [
        ClipFeatures(
            augmentation=tag,
            features={name: values[index] for name, values in features.items()},
            waveform=clips[index] if options.keep_waveform else None,
        )
        for index, tag in enumerate(tags)
    ]
