"""Decoding audio files into float32 NumPy arrays, whole or in streamed blocks.

libsndfile (through ``soundfile``) reads WAV (PCM 8/16/24/32-bit, float, µ-law, A-law, GSM 6.10),
FLAC, OGG/Vorbis, Opus and MP3, from a path or from bytes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
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
        if not os.path.isfile(source):
            raise ClipError("read", f"not a regular file (a FIFO, socket or device): {source}")
        if not os.access(source, os.R_OK):
            raise ClipError("read", f"permission denied: {source}")
        empty = os.path.getsize(source) == 0
    else:
        empty = isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0
    if empty:
        raise ClipError("empty", "the file is empty (0 bytes)")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        # a path as bytes: soundfile encodes str paths strictly, refusing names that are not UTF-8
        return sf.SoundFile(os.fsencode(handle) if isinstance(handle, str) else handle)
    except FileNotFoundError:
        raise ClipError("read", f"file not found: {source}") from None
    except PermissionError:
        raise ClipError("read", f"permission denied: {source}") from None
    except IsADirectoryError:
        raise ClipError("read", f"is a directory: {source}") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        message = (getattr(exc, "error_string", None) or str(exc)).strip().replace("\n", " ")
        codec, rate = _wav_format(source) or (None, None)
        if codec is not None and codec not in _WAV_CODECS:
            raise ClipError("unsupported", f"WAV codec 0x{codec:04X} is not supported; convert the file to PCM WAV or FLAC") from None
        if rate is not None and not 0 < rate <= _MAX_SAMPLE_RATE_HZ:
            raise ClipError("decode", f"impossible sample rate {rate} Hz in the header") from None
        kind = "unsupported" if "unsupported" in message.lower() else "decode"
        raise ClipError(kind, f"cannot decode audio: {message}") from None


_MAX_SAMPLE_RATE_HZ = 1_000_000

#: WAV format tags libsndfile decodes: PCM, MS ADPCM, float, A-law, µ-law, IMA ADPCM, GSM 6.10, G.721, MP3, extensible.
_WAV_CODECS = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055, 0xFFFE})


def _wav_format(source: AudioSource) -> tuple[int, int] | None:
    """Format tag and sample rate in a RIFF/WAVE file's ``fmt `` chunk; None for other files."""
    if isinstance(source, str):
        with open(source, "rb") as handle:
            head = handle.read(4096)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:4096])
    else:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 10 <= len(head):
        size = int.from_bytes(head[offset + 4 : offset + 8], "little")
        if head[offset : offset + 4] == b"fmt ":
            fmt = head[offset + 8 : offset + 16].ljust(8, b"\0")
            return int.from_bytes(fmt[:2], "little"), int.from_bytes(fmt[4:8], "little")
        offset += 8 + size + (size & 1)
    return None


def _check_header(handle: sf.SoundFile) -> AudioInfo:
    info = AudioInfo(handle.samplerate, handle.channels, max(handle.frames, 0), handle.subtype or "")
    if not 0 < info.sample_rate <= _MAX_SAMPLE_RATE_HZ:
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

    Raises
    ------
    ClipError
        ``decode`` also for an Ogg file with a damaged page, and for a file whose decoding ends
        before the frame count of its header, so that no clip is silently cut short.
    """
    with _open(source) as handle:
        info = _check_header(handle)
        _check_ogg_pages(handle, source)
        try:
            data = handle.read(dtype="float32", always_2d=True) if handle.seekable() else _read_forwards(handle)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise ClipError("decode", f"cannot decode audio data: {str(exc).strip()}") from None
    if data.shape[0] == 0:
        raise ClipError("empty", "the file holds no audio samples")
    _check_complete(data.shape[0], info, handle.format)
    info = AudioInfo(info.sample_rate, info.channels, data.shape[0], info.subtype)
    return np.ascontiguousarray(data.T), info


#: Each byte with its bits reversed: Ogg's CRC-32 is zlib's with the bits of data and result reversed.
_REVERSED_BITS = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, no initial or final XOR)."""
    reflected = zlib.crc32(page.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _check_ogg_pages(handle: sf.SoundFile, source: AudioSource) -> None:
    """Refuse an Ogg file (Vorbis, Opus) with a page that fails its checksum or is cut short: ``decode``.

    libsndfile skips or stops at a damaged page without an error, and how much it decodes
    depends on the sizes of the reads; the checksums say for sure. Reads ``source`` page by page
    (a file object is read from its start and put back where it was).
    """
    if handle.format != "OGG":
        return
    if isinstance(source, str):
        with open(source, "rb") as stream:
            _verify_ogg_pages(stream)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        _verify_ogg_pages(io.BytesIO(source))
    else:
        position = source.tell()
        try:
            source.seek(0)
            _verify_ogg_pages(source)
        finally:
            source.seek(position)


def _verify_ogg_pages(stream: BinaryIO) -> None:
    offset = 0
    while header := stream.read(27):
        if len(header) == 27 and header[:4] == b"OggS":
            segments = stream.read(header[26])
            body = stream.read(sum(segments))
            if len(segments) == header[26] and len(body) == sum(segments):
                (recorded,) = struct.unpack("<I", header[22:26])
                if _ogg_crc(header[:22] + bytes(4) + header[26:] + segments + body) == recorded:
                    offset += len(header) + len(segments) + len(body)
                    continue
        raise ClipError(
            "decode",
            f"the Ogg page at byte {offset} fails its checksum or is cut short: the file is corrupt; re-encode it "
            "from an intact copy",
        )


#: Formats whose header frame count may be an estimate (an MP3 without a Xing/LAME header gets
#: one from its size and first bit rate): a shorter decode there is no sign of damage.
_ESTIMATED_LENGTH_FORMATS = frozenset({"MP3"})


def _check_complete(frames_read: int, header: AudioInfo, file_format: str) -> None:
    """Refuse a decode that ended before the frame count of the header: ``decode``.

    libsndfile may stop without an error where a compressed stream (an Ogg stream whose pages are
    intact but whose packets are not, a FLAC frame) is corrupt; a WAV cut short is not refused
    (libsndfile derives its frame count from the file size), nor an MP3, whose count may be an
    estimate (:data:`_ESTIMATED_LENGTH_FORMATS`). Where decoding stops depends on the sizes of
    the reads, so the message leaves it out. (Ogg pages are checked first, by their checksums:
    :func:`_check_ogg_pages`.)
    """
    if file_format not in _ESTIMATED_LENGTH_FORMATS and frames_read < header.frames:
        raise ClipError(
            "decode",
            f"the audio stops before the end of the {header.duration_s:.2f} s its header announces: the file is "
            "corrupt; re-encode it from an intact copy",
        )


def _read_forwards(handle: sf.SoundFile, block_frames: int = 1 << 16) -> np.ndarray:
    """All frames ``[frames, channels]`` of a file libsndfile reads forwards only (e.g. GSM 6.10
    in WAV), which refuses a read without a frame count."""
    blocks = []
    while (block := handle.read(block_frames, dtype="float32", always_2d=True)).shape[0]:
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, handle.channels), dtype=np.float32)


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

    Raises
    ------
    ClipError
        ``decode`` for undecodable data or an Ogg file with a damaged page (before the first
        block), or (after the blocks read) for a file whose decoding ends before its header's
        frame count, with :func:`decode_audio`'s sentences.
    """
    if block_frames <= 0:
        raise ValueError("block_frames must be positive")
    with _open(source) as handle:
        info = _check_header(handle)
        _check_ogg_pages(handle, source)
        frames_read = 0
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise ClipError("decode", f"cannot decode audio data: {str(exc).strip()}") from None
            if block.shape[0] == 0:
                if frames_read:
                    _check_complete(frames_read, info, handle.format)
                return
            frames_read += block.shape[0]
            yield np.ascontiguousarray(block.T), info
