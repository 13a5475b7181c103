"""Which speech detector holds up in noise? ``vad.method`` energy, webrtc and silero against truth.

Usage::

    python bench/vad_accuracy.py [--data ../shared/data/ravdess-speech-16k] [--calls 4] [--utterances 24] \\
        [--noises white babble telephone] [--snr-db 30 20 10 5] [--methods energy webrtc silero] [--seed 0] \\
        [--work-dir /tmp/ser-vad-accuracy] [--set vad.webrtc_mode=3 ...]

Calls: the stereo calls of ``bench/analytics_truth.py`` (:mod:`bench._conversation`: trimmed
RAVDESS clips, two actors per call, each clip's loudest 10 ms at -20 dBFS, turns with pauses,
overlaps and back-channels), whose speech regions are known. Noise on each channel at an SNR
against that channel's speech (mean power over its true speech): ``white`` (Gaussian),
``babble`` (six clips of actors not in the call, summed and repeated over the call), and
``telephone`` (white noise, then the telephone channel: 300–3400 Hz and 8 kHz µ-law, as
scoring reads archived calls). Without the data folder, synthetic utterances and a babble of
them (the output says so).

Each file goes through :func:`ser_udfs.calls.stream.speech_turns` (decode, resample to 16 kHz,
the detector, as scoring does) with ``conf/score.toml`` and ``vad.method`` set per method; every
other setting as the job's (``--set`` overrides). Printed per method, noise and SNR, pooled over
the calls and both channels: precision, recall and F1 of speech over 10 ms frames against the
true turns, and the detector's speed in times real time per channel (decode and resampling
included, one thread).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._conversation import CallTruth, lay_out, mix_call, write_variant  # noqa: E402
from bench._command import command_line  # noqa: E402
from bench._corpus import DEFAULT_SOURCE, read_mono  # noqa: E402
from bench.analytics_truth import (  # noqa: E402
    SCORE_CONFIG, SYNTHETIC_RATE, ravdess_files, ravdess_utterances, synthetic_utterances,
)
from ser_udfs.calls.stream import speech_turns  # noqa: E402
from ser_udfs.features.config import AudioConfig  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.score import ScoreJobConfig  # noqa: E402

log = logging.getLogger("bench.vad_accuracy")

FRAME_S = 0.01
BABBLE_VOICES = 6
VARIANT = {"white": (16000, "pcm16"), "babble": (16000, "pcm16"), "telephone": (8000, "ulaw")}


@dataclass
class Tally:
    """Speech frames of one method, noise and SNR, pooled: true positives, false positives, misses; timing."""

    hits: int = 0
    false_alarms: int = 0
    misses: int = 0
    audio_s: float = 0.0
    seconds: float = 0.0

    def add(self, truth: np.ndarray, found: np.ndarray) -> None:
        self.hits += int((truth & found).sum())
        self.false_alarms += int((~truth & found).sum())
        self.misses += int((truth & ~found).sum())

    def figures(self) -> tuple[float, float, float]:
        precision = self.hits / max(1, self.hits + self.false_alarms)
        recall = self.hits / max(1, self.hits + self.misses)
        return precision, recall, 2 * precision * recall / max(1e-12, precision + recall)


def frame_mask(spans: np.ndarray, rate: int, n_frames: int) -> np.ndarray:
    """bool ``[n_frames]``: 10 ms frames whose centre lies in ``spans`` (``[n, 2]`` samples at ``rate``)."""
    centres = (np.arange(n_frames) + 0.5) * FRAME_S * rate
    mask = np.zeros(n_frames, dtype=bool)
    for start, end in np.asarray(spans).reshape(-1, 2).tolist():
        mask |= (centres >= start) & (centres < end)
    return mask


def babble(voices: list[np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Several voices summed, each repeated over ``n_samples`` from a random offset: float64 ``[n_samples]``."""
    total = np.zeros(n_samples)
    for voice in voices:
        repeated = np.resize(voice, n_samples + voice.size)
        offset = int(rng.integers(voice.size))
        total += repeated[offset : offset + n_samples]
    return total


def add_noise(call: np.ndarray, truth: CallTruth, kind: str, snr_db: float, voices: list[np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
    """``call`` ``[2, n]`` with ``kind`` noise on each channel at ``snr_db`` under its speech power."""
    noisy = call.astype(np.float64)
    for channel in range(call.shape[0]):
        speech = frame_mask(truth.turns[channel], truth.sample_rate, call.shape[1] // int(FRAME_S * truth.sample_rate))
        samples = np.repeat(speech, int(FRAME_S * truth.sample_rate))
        power = float(np.mean(call[channel, : samples.size][samples] ** 2)) if samples.any() else 1e-6
        noise = babble(voices, call.shape[1], rng) if kind == "babble" else rng.standard_normal(call.shape[1])
        noise *= np.sqrt(power / 10 ** (snr_db / 10) / max(np.mean(noise**2), 1e-20))
        noisy[channel] += noise
    return np.clip(noisy, -1, 1).astype(np.float32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", default=str(DEFAULT_SOURCE), help="RAVDESS folder (Actor_XX/*.flac)")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--utterances", type=int, default=24, help="utterances per call (both channels)")
    parser.add_argument("--noises", nargs="+", default=list(VARIANT), choices=list(VARIANT))
    parser.add_argument("--snr-db", nargs="+", type=float, default=[30.0, 20.0, 10.0, 5.0])
    parser.add_argument("--methods", nargs="+", default=["energy", "webrtc", "silero"],
                        choices=["energy", "webrtc", "silero"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/ser-vad-accuracy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a scoring config override, e.g. vad.webrtc_mode=3 (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    command = command_line("vad_accuracy.py", argv)
    configs = {method: resolve_config(ScoreJobConfig, SCORE_CONFIG, [*args.overrides, f'vad.method="{method}"'])
               for method in args.methods}
    audio = AudioConfig()
    data = Path(args.data)
    actors = ravdess_files(data) if data.is_dir() else {}
    source = (f"RAVDESS clips from {data}" if actors else
              f"synthetic utterances (synth_utterance): no RAVDESS clips under {data}")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tallies: dict[tuple[str, str, float], Tally] = {}
    per_channel = args.utterances // 2
    for index in range(args.calls):
        if actors:
            utterances, rate, who = ravdess_utterances(actors, index, per_channel, args.seed, -20.0)
            others = [name for name in sorted(actors) if name not in who.split(" + ")]
            voices = [read_mono(actors[others[k % len(others)]][k])[0] for k in range(BABBLE_VOICES)]
        else:
            utterances, rate, who = synthetic_utterances(index, per_channel, args.seed, -20.0)
            voices = [voice for voice in synthetic_utterances(index + 1000, BABBLE_VOICES, args.seed, -20.0)[0][0]]
            assert rate == SYNTHETIC_RATE
        rng = np.random.default_rng([args.seed, index])
        truth = lay_out(tuple([u.size for u in channel] for channel in utterances), rate, rng,
                        analytics=configs[args.methods[0]].analytics)
        clean = mix_call(truth, utterances, rng)
        n_frames = int(clean.shape[1] / rate / FRAME_S)
        truths = [frame_mask(truth.turns[channel], rate, n_frames) for channel in (0, 1)]
        for kind in args.noises:
            for snr_db in args.snr_db:
                noisy = add_noise(clean, truth, kind, snr_db, voices, np.random.default_rng([args.seed, index, 7]))
                sample_rate, encoding = VARIANT[kind]
                path = write_variant(work / f"call{index}-{kind}-{snr_db:g}db.wav", noisy, rate,
                                     sample_rate=sample_rate, encoding=encoding)
                for method, config in configs.items():
                    started = time.perf_counter()
                    _, turns = speech_turns(path, audio, config)
                    elapsed = time.perf_counter() - started
                    tally = tallies.setdefault((method, kind, snr_db), Tally())
                    tally.seconds += elapsed
                    tally.audio_s += 2 * clean.shape[1] / rate
                    for channel, (_, regions) in enumerate(turns):
                        found = frame_mask(regions, audio.target_sample_rate_hz, n_frames)
                        tally.add(truths[channel], found)
        log.info("call %d/%d (%s): %.0f s", index + 1, args.calls, who, clean.shape[1] / rate)

    print("\n## Speech detection against truth, in noise\n")
    print(f"command: `{command}`\n")
    print(f"utterances: {source}; {args.calls} stereo calls of up to {2 * per_channel} utterances (seed {args.seed}); "
          f"10 ms frames pooled over the calls and both channels; speed: times real time per channel, one thread, "
          f"decode and resampling included\n")
    print("| method | noise | SNR dB | precision | recall | F1 | × real time |")
    print("|---|---|---|---|---|---|---|")
    for (method, kind, snr_db), tally in tallies.items():
        precision, recall, f1 = tally.figures()
        print(f"| {method} | {kind} | {snr_db:g} | {precision:.3f} | {recall:.3f} | {f1:.3f} | "
              f"{tally.audio_s / tally.seconds:.0f} |")
    print("\n| method | mean F1 over noises and SNRs | F1 at 10 dB (mean of noises) | × real time (all) |")
    print("|---|---|---|---|")
    for method in args.methods:
        own = {key: tally for key, tally in tallies.items() if key[0] == method}
        at_10 = [tally.figures()[2] for (_, _, snr_db), tally in own.items() if snr_db == 10.0]
        speed = sum(t.audio_s for t in own.values()) / sum(t.seconds for t in own.values())
        print(f"| {method} | {np.mean([t.figures()[2] for t in own.values()]):.3f} | "
              f"{np.mean(at_10) if at_10 else float('nan'):.3f} | {speed:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
