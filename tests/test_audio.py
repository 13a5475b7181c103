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
