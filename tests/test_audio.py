import io

import numpy as np
import pytest
import soundfile as sf

from ser_udfs.audio.decode import decode_audio, read_info, stream_audio_blocks
from ser_udfs.errors import ClipError


def _tone(n: int, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    return data.astype(np.float32)


@pytest.mark.parametrize(
    "fmt, subtype, tolerance",
    [
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "FLOAT", 0.0),
        ("WAV", "ULAW", 2e-2),
        ("WAV", "ALAW", 2e-2),
        ("FLAC", "PCM_16", 1e-4),
        ("OGG", "VORBIS", 5e-2),
        ("MP3", "MPEG_LAYER_III", 1e-1),
    ],
)
def test_decodes_every_supported_encoding(tmp_path, fmt: str, subtype: str, tolerance: float) -> None:
    rate = 8000 if subtype in ("ULAW", "ALAW") else 16000
    data = _tone(rate, rate, channels=2)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    waveform, info = decode_audio(str(path))
    assert info.sample_rate == rate and info.channels == 2
    assert waveform.dtype == np.float32 and waveform.shape[0] == 2
    if fmt in ("WAV", "FLAC"):
        assert waveform.shape[1] == rate
        assert np.max(np.abs(waveform.T - data)) <= tolerance
    else:  # lossy codecs: same length up to codec padding, same loudness
        assert abs(waveform.shape[1] - rate) < 0.1 * rate
        assert abs(np.sqrt(np.mean(waveform**2)) - np.sqrt(np.mean(data**2))) < tolerance


def test_decodes_bytes_and_reads_header_only(tmp_path) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _tone(4000, 8000), 8000, format="WAV", subtype="PCM_16")
    waveform, info = decode_audio(buffer.getvalue())
    assert waveform.shape == (1, 4000) and info.duration_s == 0.5
    assert read_info(buffer.getvalue()).frames == 4000


def test_streamed_blocks_equal_whole_decode(tmp_path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, _tone(50_000, 16000, channels=2), 16000)
    whole, _ = decode_audio(str(path))
    blocks = [block for block, _ in stream_audio_blocks(str(path), block_frames=4096)]
    assert all(block.shape[1] <= 4096 for block in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def test_decodes_gsm_which_libsndfile_reads_forwards_only(tmp_path) -> None:
    path = tmp_path / "call.wav"
    data = _tone(16000, 8000)
    sf.write(path, data, 8000, format="WAV", subtype="GSM610")  # mono only, lossy
    whole, info = decode_audio(str(path))
    assert (info.sample_rate, info.channels, info.frames, info.subtype) == (8000, 1, 16000, "GSM610")
    assert whole.shape == (1, 16000) and np.corrcoef(whole[0, 400:], data[400:, 0])[0, 1] > 0.99
    np.testing.assert_array_equal(decode_audio(path.read_bytes())[0], whole)
    blocks = [block for block, _ in stream_audio_blocks(str(path), block_frames=3000)]
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


@pytest.mark.parametrize(
    "content, kind",
    [(b"", "empty"), (b"RIFF\x00\x00\x00\x00WAVE", "decode"), (np.random.default_rng(0).bytes(500), "decode")],
)
def test_broken_bytes_raise_clip_errors(content: bytes, kind: str) -> None:
    with pytest.raises(ClipError) as caught:
        decode_audio(content)
    assert caught.value.kind == kind


def test_missing_file_is_a_read_error(tmp_path) -> None:
    with pytest.raises(ClipError) as caught:
        decode_audio(str(tmp_path / "absent.wav"))
    assert caught.value.kind == "read"


def test_header_without_samples_is_empty(tmp_path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(ClipError) as caught:
        decode_audio(str(path))
    assert caught.value.kind == "empty"


def _decode_errors(source, *, block_frames: tuple[int, ...]) -> set[tuple[str, str]]:
    """``(kind, message)`` of the errors of decoding ``source`` whole and streamed in blocks of each size."""
    errors = set()
    with pytest.raises(ClipError) as whole:
        decode_audio(source)
    errors.add((whole.value.kind, whole.value.message))
    for frames in block_frames:
        with pytest.raises(ClipError) as streamed:
            for _ in stream_audio_blocks(source, block_frames=frames):
                pass
        errors.add((streamed.value.kind, streamed.value.message))
    return errors


def test_an_ogg_file_with_a_damaged_page_is_a_decode_error_whole_or_streamed(tmp_path) -> None:
    """libsndfile decodes 3.1 to 3.4 s of the 4 s, or all 4 s, depending on the read sizes, without
    an error: the pages' checksums decide, the same way in extraction and in scoring."""
    from tests.torture import write_corrupted_ogg

    path = tmp_path / "corrupted.ogg"
    write_corrupted_ogg(path)
    assert read_info(str(path)).frames == 4 * 16000  # the header still announces 4 s
    errors = set()
    for source in (str(path), path.read_bytes()):
        errors |= _decode_errors(source, block_frames=(5000, 16000, 480000))
    with open(path, "rb") as handle:  # a file object (pyarrow's streams) is checked too
        with pytest.raises(ClipError, match="fails its checksum"):
            decode_audio(handle)
    assert len(errors) == 1, errors
    ((kind, message),) = errors
    assert kind == "decode" and "the Ogg page at byte" in message and "fails its checksum or is cut short" in message
    assert "\n" not in message
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(path.read_bytes()[:-300])
    assert {kind for kind, _ in _decode_errors(str(cut), block_frames=(480000,))} == {"decode"}


def test_a_decode_that_stops_before_the_header_s_length_is_a_decode_error(tmp_path) -> None:
    """An Ogg file whose pages were damaged and given fresh checksums: libsndfile stops early."""
    import struct

    from ser_udfs.audio.decode import _ogg_crc
    from tests.torture import write_corrupted_ogg

    path = tmp_path / "corrupted.ogg"
    write_corrupted_ogg(path)
    data, offset = bytearray(path.read_bytes()), 0
    while offset < len(data):
        size = 27 + data[offset + 26] + sum(data[offset + 27 : offset + 27 + data[offset + 26]])
        page = bytes(data[offset : offset + 22]) + bytes(4) + bytes(data[offset + 26 : offset + size])
        data[offset + 22 : offset + 26] = struct.pack("<I", _ogg_crc(page))
        offset += size
    path.write_bytes(bytes(data))
    errors = _decode_errors(str(path), block_frames=(5000, 16000))
    assert errors == {("decode", "the audio stops before the end of the 4.00 s its header announces: the file is "
                                 "corrupt; re-encode it from an intact copy")}


def test_a_short_decode_is_refused_except_where_the_header_length_is_an_estimate() -> None:
    from ser_udfs.audio.decode import AudioInfo, _check_complete

    header = AudioInfo(sample_rate=8000, channels=1, frames=16000, subtype="")
    with pytest.raises(ClipError, match="stops before the end of the 2.00 s"):
        _check_complete(12000, header, "OGG")
    _check_complete(16000, header, "FLAC")
    _check_complete(12000, header, "MP3")  # an MP3 without a Xing header: its frame count is estimated
