"""Benchmark input: real clips up-sampled to the rate users record at, replicated to a count.

The shared RAVDESS copy is 16 kHz FLAC; users feed the original layout (``Actor_XX/*.wav`` at
48 kHz). :func:`build_benchmark_corpus` resamples each distinct source file once to 48 kHz 16-bit
WAV and then fills ``copy_KKK/<relative path>`` folders with hard links (copies where links are
not possible) until there are ``n_clips`` files, so that every pipeline reads the same bytes and
file names still carry their corpus labels.
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

from ser_udfs.audio import AUDIO_EXTENSIONS

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


def source_files(source: Path) -> list[Path]:
    """Audio files under ``source`` (recursively), sorted."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no audio files under {source}")
    return files


def _resampled_master(source: Path, relative: Path, masters: Path, sample_rate: int) -> tuple[Path, float]:
    target = (masters / relative).with_suffix(".wav")
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


def build_benchmark_corpus(
    source: Path, work_dir: Path, *, n_clips: int, sample_rate: int = 48000
) -> BenchmarkCorpus:
    """Write ``n_clips`` audio files at ``sample_rate`` under ``work_dir/clips``.

    Parameters
    ----------
    source
        Folder of real (or generated) clips at any rate, e.g. ``../shared/data/ravdess-speech-16k``.
    work_dir
        Empty scratch folder (a temporary directory).
    n_clips
        Number of files to produce; distinct sources are reused round-robin.
    sample_rate
        Rate of the written 16-bit WAV files, Hz.
    """
    if n_clips <= 0:
        raise ValueError("n_clips must be positive")
    sources = source_files(source)[:n_clips]
    masters_dir = work_dir / "masters"
    clips_dir = work_dir / "clips"
    masters: list[tuple[Path, Path, float]] = []
    for path in sources:
        relative = path.relative_to(source)
        master, seconds = _resampled_master(path, relative, masters_dir, sample_rate)
        masters.append((relative.with_suffix(".wav"), master, seconds))
    paths: list[str] = []
    audio_seconds = 0.0
    for index in range(n_clips):
        relative, master, seconds = masters[index % len(masters)]
        target = clips_dir / f"copy_{index // len(masters):03d}" / relative
        _link_or_copy(master, target)
        paths.append(str(target))
        audio_seconds += seconds
    log.info("built %d clips at %d Hz from %d distinct files in %s", n_clips, sample_rate, len(masters), clips_dir)
    return BenchmarkCorpus(clips_dir, tuple(paths), sample_rate, audio_seconds, len(masters))
