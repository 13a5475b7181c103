"""Benchmark input: real clips up-sampled to the rate users record at, replicated to a count.

The shared RAVDESS copy is 16 kHz FLAC; users feed the original layout (``Actor_XX/*.wav`` at
48 kHz). :func:`prepare_masters` resamples each distinct source file once to 48 kHz 16-bit WAV;
:func:`replicate` then fills ``copy_KKK/<relative path>`` folders with hard links (copies where
links are not possible) until there are ``n_clips`` files, so that every pipeline reads the same
bytes and file names still carry their corpus labels.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ser_udfs.audio.decode import AUDIO_EXTENSIONS

log = logging.getLogger(__name__)

#: Where the shared data lives relative to the repository (``../shared/data``).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SOURCE = SHARED_DATA / "ravdess-speech-16k"


@dataclass(frozen=True)
class BenchmarkCorpus:
    """The generated input of one benchmark run."""

    root: Path
    paths: tuple[str, ...]
    sample_rate: int
    audio_seconds: float
    distinct_files: int


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """A clip as float32 mono ``[n]`` (channels averaged) and its sample rate."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def source_files(source: Path) -> list[Path]:
    """Audio files under ``source`` (recursively), sorted."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no audio files under {source}")
    return files


def _resampled_master(source: Path, relative: Path, masters: Path, sample_rate: int) -> tuple[Path, float]:
    target = (masters / relative).with_suffix(".wav")
    if target.exists():  # a --work-dir kept from an earlier run
        info = sf.info(target)
        if info.samplerate == sample_rate:
            return target, info.frames / sample_rate
    target.parent.mkdir(parents=True, exist_ok=True)
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    if rate != sample_rate:
        data = soxr.resample(data, rate, sample_rate, quality="VHQ")
    sf.write(target, np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return target, data.shape[0] / sample_rate


def _link_or_copy(master: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(master, target)
    except OSError:
        shutil.copyfile(master, target)


@dataclass(frozen=True)
class Masters:
    """Distinct source clips resampled once: ``(relative path, written file, seconds)`` each."""

    root: Path
    sample_rate: int
    clips: tuple[tuple[Path, Path, float], ...]


def prepare_masters(source: Path, work_dir: Path, *, sample_rate: int = 48000, limit: int | None = None) -> Masters:
    """Resample up to ``limit`` distinct files under ``source`` to ``sample_rate`` 16-bit WAV.

    Parameters
    ----------
    source
        Folder of real (or generated) clips at any rate, e.g. ``../shared/data/ravdess-speech-16k``.
    work_dir
        Scratch folder (a temporary directory); the files go to ``work_dir/masters``.
    """
    masters_dir = work_dir / "masters"
    clips = []
    for path in source_files(source)[:limit]:
        relative = path.relative_to(source)
        master, seconds = _resampled_master(path, relative, masters_dir, sample_rate)
        clips.append((relative.with_suffix(".wav"), master, seconds))
    log.info("resampled %d distinct files from %s to %d Hz", len(clips), source, sample_rate)
    return Masters(masters_dir, sample_rate, tuple(clips))


def replicate(masters: Masters, target_dir: Path, n_clips: int) -> BenchmarkCorpus:
    """Fill ``target_dir/copy_KKK/<relative path>`` with ``n_clips`` links to the masters, reused
    round-robin, so that file names keep their corpus labels."""
    if n_clips <= 0:
        raise ValueError("n_clips must be positive")
    shutil.rmtree(target_dir, ignore_errors=True)  # a --work-dir kept from an earlier run
    paths: list[str] = []
    audio_seconds = 0.0
    count = len(masters.clips)
    for index in range(n_clips):
        relative, master, seconds = masters.clips[index % count]
        target = target_dir / f"copy_{index // count:03d}" / relative
        _link_or_copy(master, target)
        paths.append(str(target))
        audio_seconds += seconds
    return BenchmarkCorpus(target_dir, tuple(paths), masters.sample_rate, audio_seconds, min(count, n_clips))
