"""Decoding audio files into float32 NumPy arrays, whole or in streamed blocks.

libsndfile (through ``soundfile``) reads WAV (PCM 8/16/24/32-bit, float, µ-law, A-law, GSM 6.10),
FLAC, OGG/Vorbis, Opus and MP3, from a path or from bytes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf

from ser_udfs.errors import ClipError

AudioSource = str | bytes | BinaryIO

#: File-name endings that the readers list as audio.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says."""

    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open(source: AudioSource) -> sf.SoundFile:
    if isinstance(source, str):
        if os.path.isdir(source):
            raise ClipError("read", f"is a directory: {source}")
        if not os.path.exists(source):
            raise ClipError("read", f"file not found: {source}")
        if not os.access(source, os.R_OK):
            raise ClipError("read", f"permission denied: {source}")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        return sf.SoundFile(handle)
    except FileNotFoundError:
        raise ClipError("read", f"file not found: {source}") from None
    except PermissionError:
        raise ClipError("read", f"permission denied: {source}") from None
    except IsADirectoryError:
        raise ClipError("read", f"is a directory: {source}") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        message = str(exc).strip().replace("\n", " ")
        kind = "unsupported" if "unsupported" in message.lower() else "decode"
        raise ClipError(kind, f"cannot decode audio: {message}") from None


def _check_header(handle: sf.SoundFile) -> AudioInfo:
    info = AudioInfo(handle.samplerate, handle.channels, max(handle.frames, 0), handle.subtype or "")
    if info.sample_rate <= 0 or info.sample_rate > 1_000_000:
        raise ClipError("decode", f"impossible sample rate {info.sample_rate} Hz in the header")
    if info.channels <= 0:
        raise ClipError("decode", f"impossible channel count {info.channels} in the header")
    return info


def read_info(source: AudioSource) -> AudioInfo:
    """Read only the header of ``source``."""
    with _open(source) as handle:
        return _check_header(handle)


def decode_audio(source: AudioSource) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file.

    Returns
    -------
    waveform
        float32 ``[channels, frames]`` in [-1, 1] for integer encodings.
    info
        Header information; ``info.frames`` is the number of frames actually decoded.
    """
    with _open(source) as handle:
        info = _check_header(handle)
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise ClipError("decode", f"cannot decode audio data: {str(exc).strip()}") from None
    if data.shape[0] == 0:
        raise ClipError("empty", "the file holds no audio samples")
    info = AudioInfo(info.sample_rate, info.channels, data.shape[0], info.subtype)
    return np.ascontiguousarray(data.T), info


def stream_audio_blocks(
    source: AudioSource, *, block_frames: int
) -> Iterator[tuple[np.ndarray, AudioInfo]]:
    """Decode ``source`` in consecutive blocks so that memory stays flat for long files.

    Yields
    ------
    block
        float32 ``[channels, <= block_frames]``; the last block may be shorter.
    info
        The header information (the same object for every block).
    """
    if block_frames <= 0:
        raise ValueError("block_frames must be positive")
    with _open(source) as handle:
        info = _check_header(handle)
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise ClipError("decode", f"cannot decode audio data: {str(exc).strip()}") from None
            if block.shape[0] == 0:
                return
            yield np.ascontiguousarray(block.T), info
