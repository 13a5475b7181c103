"""Generated phone calls with known content, for the demo, the tests and the benchmarks.

A call is a set of :class:`Turn` s: speech-like utterances (:func:`ser_udfs.synthetic.speech.synth_utterance`)
in a given emotion on a given channel, with silence between them. Stereo calls put the agent on
channel 0 and the customer on channel 1, as call recorders do. :func:`write_call` writes them in
the encodings telephone archives hold (8 kHz µ-law or A-law WAV, GSM 6.10, PCM, FLAC, ...);
:func:`write_long_call` streams hours of audio to disk block by block from a small pool of
utterances, so that generating a 2-hour call takes little memory and seconds.

Command line (writes the demo call and its turns as JSON beside it)::

    python -m ser_udfs.synthetic.calls demo/calls/demo_call.wav [--duration-s 120] [--encoding ulaw]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from ser_udfs.synthetic.speech import synth_utterance

logger = logging.getLogger(__name__)

#: ``encoding`` name → (soundfile container format, subtype).
ENCODINGS: dict[str, tuple[str, str | None]] = {
    "pcm8": ("WAV", "PCM_U8"),
    "pcm16": ("WAV", "PCM_16"),
    "pcm24": ("WAV", "PCM_24"),
    "float": ("WAV", "FLOAT"),
    "ulaw": ("WAV", "ULAW"),
    "alaw": ("WAV", "ALAW"),
    "gsm": ("WAV", "GSM610"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}

#: Speaker seeds of the agent (channel 0) and the customer (channel 1).
CHANNEL_SPEAKERS = {0: (101, True), 1: (202, False)}

#: Emotions of the demo call, per channel: a calm agent, a customer who gets angry, then sad.
DEMO_EMOTIONS: dict[int, tuple[str, ...]] = {
    0: ("neutral", "happy", "neutral", "calm"),
    1: ("neutral", "neutral", "angry", "angry", "angry", "sad", "sad", "neutral"),
}


@dataclass(frozen=True)
class Turn:
    """One utterance of a call: ``channel`` speaks in ``emotion`` from ``start_s`` to ``end_s``."""

    channel: int
    start_s: float
    end_s: float
    emotion: str


def extension_for(encoding: str) -> str:
    """File-name ending of ``encoding`` (``.wav``, ``.flac``, ...)."""
    return _EXTENSIONS[_format_and_subtype(encoding)[0]]


def _format_and_subtype(encoding: str) -> tuple[str, str | None]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}") from None


def conversation_turns(
    duration_s: float,
    emotions_by_channel: Mapping[int, Sequence[str]],
    *,
    seed: int = 0,
    turn_s: tuple[float, float] = (2.0, 4.0),
    pause_s: tuple[float, float] = (0.6, 2.0),
    lead_s: float = 1.0,
) -> list[Turn]:
    """Alternating turns of the channels in ``emotions_by_channel``, in channel order.

    Each channel's ``k``-th turn takes its ``k``-th emotion (cycling). Turn lengths and pauses
    are drawn uniformly from ``turn_s`` and ``pause_s``; turns never overlap and end before
    ``duration_s``.
    """
    rng = np.random.default_rng(seed)
    channels = sorted(emotions_by_channel)
    turns: list[Turn] = []
    counts = dict.fromkeys(channels, 0)
    time_s = lead_s
    while True:
        channel = channels[len(turns) % len(channels)]
        length_s = float(rng.uniform(*turn_s))
        if time_s + length_s > duration_s:
            return turns
        emotions = emotions_by_channel[channel]
        turns.append(Turn(channel, round(time_s, 3), round(time_s + length_s, 3), emotions[counts[channel] % len(emotions)]))
        counts[channel] += 1
        time_s = round(time_s + length_s + float(rng.uniform(*pause_s)), 3)


def telephone_filter(sample_rate: int) -> np.ndarray:
    """Second-order sections of a 300–3400 Hz band-pass (clipped below the Nyquist frequency)."""
    high = min(3400.0, 0.45 * sample_rate)
    return signal.butter(4, [300.0, high], btype="bandpass", fs=sample_rate, output="sos")


def synth_call(
    turns: Sequence[Turn],
    *,
    duration_s: float,
    channels: int = 2,
    sample_rate: int = 8000,
    noise_dbfs: float = -60.0,
    telephone_band: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Render ``turns`` into a call held in memory (for short calls; see :func:`write_long_call`).

    Parameters
    ----------
    turns
        What is said, where and when; ``turn.channel < channels``.
    duration_s
        Length of the call.
    noise_dbfs
        Level of white line noise added to every channel, dBFS.
    telephone_band
        Band-limit each channel to 300–3400 Hz, like a telephone line.

    Returns
    -------
    np.ndarray
        float32 ``[channels, round(duration_s * sample_rate)]``.
    """
    n_samples = int(round(duration_s * sample_rate))
    rng = np.random.default_rng([seed, 7])
    call = rng.standard_normal((channels, n_samples)) * 10.0 ** (noise_dbfs / 20.0)
    for index, turn in enumerate(turns):
        if not 0 <= turn.channel < channels:
            raise ValueError(f"turn {turn} is on channel {turn.channel}, but the call has {channels} channel(s)")
        speaker_seed, female = CHANNEL_SPEAKERS.get(turn.channel, (300 + turn.channel, False))
        start = int(round(turn.start_s * sample_rate))
        utterance = synth_utterance(
            turn.emotion, speaker_seed=speaker_seed, utterance_seed=seed * 100_000 + index,
            sample_rate=sample_rate, duration_s=turn.end_s - turn.start_s, female=female,
        )
        end = min(n_samples, start + utterance.size)
        call[turn.channel, start:end] += utterance[: end - start]
    if telephone_band:
        call = signal.sosfilt(telephone_filter(sample_rate), call, axis=1)
    return np.clip(call, -1.0, 1.0).astype(np.float32)


def write_call(path: str | Path, waveform: np.ndarray, sample_rate: int, *, encoding: str = "pcm16") -> Path:
    """Write a call ``[channels, n]`` (or ``[n]``) in one of :data:`ENCODINGS`."""
    file_format, subtype = _format_and_subtype(encoding)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = waveform.T if waveform.ndim == 2 else waveform
    sf.write(path, data, sample_rate, format=file_format, subtype=subtype)
    return path


def write_long_call(
    path: str | Path,
    duration_s: float,
    *,
    channels: int = 2,
    sample_rate: int = 8000,
    encoding: str = "ulaw",
    emotions: Sequence[str] = ("neutral", "happy", "sad", "angry", "fear", "disgust"),
    pool_size: int = 12,
    noise_dbfs: float = -60.0,
    seed: int = 0,
    block_s: float = 60.0,
) -> list[Turn]:
    """Stream a long conversation to ``path`` block by block (memory stays flat).

    Turns alternate between the channels as in :func:`conversation_turns`; each turn plays an
    utterance from a pool of ``pool_size`` pre-synthesised utterances per channel (cut to the
    turn's length), so hours of audio take seconds to write.

    Returns
    -------
    list[Turn]
        The turns written.
    """
    file_format, subtype = _format_and_subtype(encoding)
    by_channel = {channel: tuple(np.roll(np.asarray(emotions), -channel)) for channel in range(channels)}
    turns = conversation_turns(duration_s, by_channel, seed=seed)
    pool: dict[tuple[int, str], list[np.ndarray]] = {}
    for channel in range(channels):
        speaker_seed, female = CHANNEL_SPEAKERS.get(channel, (300 + channel, False))
        for emotion in by_channel[channel]:
            pool[channel, emotion] = [
                synth_utterance(emotion, speaker_seed=speaker_seed, utterance_seed=seed * 1000 + k,
                                sample_rate=sample_rate, duration_s=4.0, female=female)
                for k in range(max(1, pool_size // len(by_channel[channel])))
            ]
    sos = telephone_filter(sample_rate)
    filter_state = np.zeros((sos.shape[0], channels, 2))
    rng = np.random.default_rng([seed, 11])
    n_samples = int(round(duration_s * sample_rate))
    block = int(round(block_s * sample_rate))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    next_turn = 0
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=channels, format=file_format, subtype=subtype) as out:
        for block_start in range(0, n_samples, block):
            block_end = min(n_samples, block_start + block)
            audio = rng.standard_normal((channels, block_end - block_start)) * 10.0 ** (noise_dbfs / 20.0)
            while next_turn < len(turns) and turns[next_turn].end_s * sample_rate <= block_start:
                next_turn += 1
            index = next_turn
            while index < len(turns) and turns[index].start_s * sample_rate < block_end:
                turn = turns[index]
                choices = pool[turn.channel, turn.emotion]
                utterance = choices[index % len(choices)][: int(round((turn.end_s - turn.start_s) * sample_rate))]
                start = int(round(turn.start_s * sample_rate))
                lo, hi = max(start, block_start), min(start + utterance.size, block_end)
                if hi > lo:
                    audio[turn.channel, lo - block_start : hi - block_start] += utterance[lo - start : hi - start]
                index += 1
            audio, filter_state = signal.sosfilt(sos, audio, axis=1, zi=filter_state)
            out.write(np.clip(audio, -1.0, 1.0).T.astype(np.float32))
    logger.info("wrote a %.0f s %d-channel call (%d turns) to %s", duration_s, channels, len(turns), path)
    return turns


def write_demo_call(
    path: str | Path, *, duration_s: float = 90.0, sample_rate: int = 8000, encoding: str = "ulaw", seed: int = 3
) -> list[Turn]:
    """Write the demo's stereo call: a calm agent on channel 0, a customer who gets angry then
    sad on channel 1, in 8 kHz µ-law like a telephone archive.

    Returns
    -------
    list[Turn]
        The turns, also written as JSON to ``<path>.turns.json``.
    """
    turns = conversation_turns(duration_s, DEMO_EMOTIONS, seed=seed)
    call = synth_call(turns, duration_s=duration_s, channels=2, sample_rate=sample_rate, seed=seed)
    path = write_call(path, call, sample_rate, encoding=encoding)
    Path(f"{path}.turns.json").write_text(json.dumps([asdict(turn) for turn in turns], indent=1) + "\n")
    logger.info("wrote the demo call %s (%.0f s, %d turns)", path, duration_s, len(turns))
    return turns


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the demo call."""
    parser = argparse.ArgumentParser(description="Write the demo's generated stereo call (agent 0, customer 1).")
    parser.add_argument("path", help="output file, e.g. demo/calls/demo_call.wav")
    parser.add_argument("--duration-s", type=float, default=90.0)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--encoding", default="ulaw", choices=sorted(ENCODINGS))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    write_demo_call(args.path, duration_s=args.duration_s, sample_rate=args.sample_rate, encoding=args.encoding, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
