"""Are the call analytics true? Measured talk, turns, overlap and interruptions against designed calls.

Usage::

    python bench/analytics_truth.py [--data ../shared/data/ravdess-speech-16k] [--calls 12] [--utterances 40] \\
        [--seed 0] [--work-dir /tmp/ser-analytics-truth] [--set vad.bridge_gap_s=0.6 ...]

Calls (:mod:`bench._conversation`): call ``i`` puts two RAVDESS actors on its channels (a seeded
shuffle of the actors, two per call) with ``--utterances / 2`` clips each, drawn without
replacement; each clip is set to a speech level (``--peak-dbfs``: its loudest 10 ms frame,
-20 dBFS by default) and trimmed to where its speech is
(:func:`bench._conversation.trim_speech`), and the trimmed speech is laid out as a conversation with pauses, overlapping turn changes
(interruptions) and back-channels (overlaps that are not interruptions), -60 dBFS line noise on
both channels. Without the ``--data`` folder the utterances are synthetic
(:func:`ser_udfs.synthetic.speech.synth_utterance`), as the output says. Each call is written
twice: 8 kHz µ-law through the telephone band, and 16 kHz PCM16.

Each file goes through :func:`ser_udfs.calls.stream.speech_turns` with the scoring job's
settings (``conf/score.toml``, ``--set`` overrides as the job's ``--set``) and the default
feature config's rate (16 kHz), and is held against its truth, per call and over all calls of a
variant: talk seconds and turn count per channel, total overlap (relative errors), designed
overlaps of at least 1 s found (the measured overlap covers at least half of one), the
interruptions (:func:`~ser_udfs.calls.analytics.interruption_turns` with ``[analytics]``): a
designed one is found when a measured interruption turn is matched to it (a measured turn is
matched to the true turn of its channel it overlaps most); recall = found / designed, precision
= found / measured interruption turns; and the median reply gap
(:func:`~ser_udfs.calls.analytics.reply_gaps`). The summary gives PASS/MISS per target, over the calls of each variant: talk within
10 % per channel, turn count within 10 % per channel, total overlap within 25 %, every designed
overlap of at least 1 s found.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._conversation import NOISE_DBFS, PEAK_DBFS, CallTruth, lay_out, mix_call, trim_speech, write_variant  # noqa: E402
from bench._command import command_line  # noqa: E402
from bench._corpus import DEFAULT_SOURCE, read_mono  # noqa: E402
from ser_udfs.calls.analytics import covered_samples, interruption_turns, overlap_spans, reply_gaps  # noqa: E402
from ser_udfs.calls.config import CallScoringConfig  # noqa: E402
from ser_udfs.calls.stream import speech_turns  # noqa: E402
from ser_udfs.features.config import AudioConfig  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.score import ScoreJobConfig  # noqa: E402
from ser_udfs.synthetic.calls import extension_for  # noqa: E402
from ser_udfs.synthetic.speech import EMOTION_PROFILES, synth_utterance  # noqa: E402

SCORE_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "score.toml"
log = logging.getLogger("bench.analytics_truth")

#: ``(name, sample rate, encoding)`` of the written files.
VARIANTS = (("8 kHz µ-law, telephone band", 8000, "ulaw"), ("16 kHz PCM16", 16000, "pcm16"))
#: The issue's targets: relative errors, and the shortest designed overlap that must be found.
TARGET_TALK, TARGET_TURNS, TARGET_OVERLAP, TARGET_FOUND_S = 0.10, 0.10, 0.25, 1.0
#: Share of a designed overlap the measured overlap must cover for it to count as found.
FOUND_SHARE = 0.5
SYNTHETIC_RATE = 16000


@dataclass(frozen=True)
class CallFigures:
    """True against measured figures of one written call (seconds; counts per channel)."""

    true_talk_s: tuple[float, float]
    measured_talk_s: tuple[float, float]
    true_turns: tuple[int, int]
    measured_turns: tuple[int, int]
    true_overlap_s: float
    measured_overlap_s: float
    designed_overlaps: int
    designed_found: int
    designed_interruptions: int
    true_rule_interruptions: int
    interruptions_found: int
    measured_interruptions: int
    true_gaps_s: np.ndarray
    measured_gaps_s: np.ndarray


def _seconds(spans: np.ndarray, rate: int) -> float:
    return float((spans[:, 1] - spans[:, 0]).sum()) / rate


def _owner(turn: np.ndarray, truth: np.ndarray) -> int:
    """Index of the true turn (``[n, 2]``) that ``turn`` overlaps most, -1 for none."""
    if not len(truth):
        return -1
    shared = np.minimum(truth[:, 1], turn[1]) - np.maximum(truth[:, 0], turn[0])
    return int(np.argmax(shared)) if shared.max() > 0 else -1


def measure_call(truth: CallTruth, measured: Sequence[np.ndarray], rate: int, config: CallScoringConfig) -> CallFigures:
    """Hold the measured turns of a call (int64 ``[n_c, 2]`` per channel at ``rate``) against its truth."""
    true_turns = truth.turns_at(rate)
    designed = np.round(truth.overlaps * (rate / truth.sample_rate)).astype(np.int64)
    long_enough = designed[(designed[:, 1] - designed[:, 0]) >= TARGET_FOUND_S * rate]
    measured_overlap = overlap_spans(list(measured))
    found = sum(covered_samples(start, end, measured_overlap) >= FOUND_SHARE * (end - start) for start, end in long_enough)
    flags = interruption_turns(list(measured), rate, config.analytics)
    designed_set = set(truth.interruptions)
    matched = {(channel, _owner(turn, true_turns[channel]))
               for channel in range(2) for turn in measured[channel][flags[channel]]}
    return CallFigures(
        true_talk_s=tuple(_seconds(turns, rate) for turns in true_turns),
        measured_talk_s=tuple(_seconds(turns, rate) for turns in measured),
        true_turns=tuple(len(turns) for turns in true_turns),
        measured_turns=tuple(len(turns) for turns in measured),
        true_overlap_s=_seconds(overlap_spans(true_turns), rate),
        measured_overlap_s=_seconds(measured_overlap, rate),
        designed_overlaps=len(long_enough),
        designed_found=int(found),
        designed_interruptions=len(designed_set),
        true_rule_interruptions=int(sum(flag.sum() for flag in interruption_turns(true_turns, rate, config.analytics))),
        interruptions_found=len(designed_set & matched),
        measured_interruptions=int(sum(flag.sum() for flag in flags)),
        true_gaps_s=reply_gaps(true_turns) / rate,
        measured_gaps_s=reply_gaps(list(measured)) / rate,
    )


def ravdess_files(data: Path) -> dict[str, list[Path]]:
    """Clips per actor folder (``Actor_XX/*.flac|wav``, sorted)."""
    actors = {}
    for folder in sorted(data.glob("Actor_*")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".flac", ".wav"))
        if files:
            actors[folder.name] = files
    return actors


def ravdess_utterances(actors: dict[str, list[Path]], index: int, per_channel: int, seed: int, peak_dbfs: float | None,
                       ) -> tuple[tuple[list[np.ndarray], list[np.ndarray]], int, str]:
    """Trimmed clips of call ``index``'s two actors: ``((channel 0, channel 1), rate, who)``."""
    names = sorted(actors)
    order = np.random.default_rng(seed).permutation(len(names))
    pair = [names[order[(2 * index + side) % len(names)]] for side in (0, 1)]
    rng = np.random.default_rng([seed, index, 1])
    channels, rates = [], set()
    for name in pair:
        files = actors[name]
        chosen = rng.choice(len(files), size=min(per_channel, len(files)), replace=False)
        clips = [read_mono(files[k]) for k in chosen]
        rates.update(rate for _, rate in clips)
        channels.append([trim_speech(samples, rate, peak_dbfs=peak_dbfs) for samples, rate in clips])
    if len(rates) != 1:
        raise SystemExit(f"the clips of {pair} are at several sample rates {sorted(rates)}; use one rate")
    return (channels[0], channels[1]), rates.pop(), " + ".join(pair)


def synthetic_utterances(index: int, per_channel: int, seed: int, peak_dbfs: float | None,
                         ) -> tuple[tuple[list[np.ndarray], list[np.ndarray]], int, str]:
    """Trimmed synthetic utterances (1.2–2.4 s before trimming) of call ``index``: two speakers."""
    rng = np.random.default_rng([seed, index, 2])
    emotions = sorted(EMOTION_PROFILES)
    channels = []
    for side in (0, 1):
        speaker = 1000 + 2 * index + side
        channels.append([
            trim_speech(synth_utterance(
                emotions[int(rng.integers(len(emotions)))], speaker_seed=speaker, utterance_seed=k,
                sample_rate=SYNTHETIC_RATE, duration_s=float(rng.uniform(1.2, 2.4)), female=side == 1,
            ), SYNTHETIC_RATE, peak_dbfs=peak_dbfs)
            for k in range(per_channel)
        ])
    return (channels[0], channels[1]), SYNTHETIC_RATE, f"synthetic speakers {1000 + 2 * index} + {1001 + 2 * index}"


def relative(measured: float, true: float) -> float:
    """``(measured - true) / true`` (inf when nothing is true but something is measured, 0 when neither)."""
    if true == 0:
        return 0.0 if measured == 0 else float("inf")
    return (measured - true) / true


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _median(values: np.ndarray) -> str:
    return f"{np.median(values):.2f}" if len(values) else "-"


def _row(name: str, figures: Sequence[CallFigures]) -> str:
    talk = [(sum(f.true_talk_s[c] for f in figures), sum(f.measured_talk_s[c] for f in figures)) for c in (0, 1)]
    turns = [(sum(f.true_turns[c] for f in figures), sum(f.measured_turns[c] for f in figures)) for c in (0, 1)]
    overlap = sum(f.true_overlap_s for f in figures), sum(f.measured_overlap_s for f in figures)
    true_gaps = np.concatenate([f.true_gaps_s for f in figures])
    measured_gaps = np.concatenate([f.measured_gaps_s for f in figures])
    cells = [name]
    cells += [f"{true:.1f} / {meas:.1f} ({_pct(relative(meas, true))})" for true, meas in talk]
    cells += [f"{true} / {meas} ({_pct(relative(meas, true))})" for true, meas in turns]
    cells.append(f"{overlap[0]:.1f} / {overlap[1]:.1f} ({_pct(relative(overlap[1], overlap[0]))})")
    cells.append(f"{sum(f.designed_found for f in figures)} / {sum(f.designed_overlaps for f in figures)}")
    cells.append(f"{sum(f.designed_interruptions for f in figures)} ({sum(f.true_rule_interruptions for f in figures)})"
                 f" / {sum(f.interruptions_found for f in figures)} / {sum(f.measured_interruptions for f in figures)}")
    cells.append(f"{_median(true_gaps)} / {_median(measured_gaps)}")
    return "| " + " | ".join(cells) + " |"


def print_table(name: str, calls: Sequence[tuple[str, CallFigures]]) -> None:
    """One markdown table of a variant: a row per call and one over all of them."""
    print(f"\n### {name}: true / measured\n")
    print("| call | talk s ch 0 | talk s ch 1 | turns ch 0 | turns ch 1 | overlap s | designed overlaps >= 1 s "
          "found | interruptions designed (by the rule on the true turns) / found / measured | "
          "median reply gap s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for who, figures in calls:
        print(_row(who, [figures]))
    print(_row(f"all {len(calls)} calls", [figures for _, figures in calls]))


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def print_summary(results: dict[str, list[CallFigures]]) -> None:
    """PASS/MISS of each target per variant, in aggregate over its calls (per call: the worst call)."""
    print("\n## Summary\n")
    for name, figures in results.items():
        n = len(figures)
        for what, true_of, measured_of, target in (
            ("talk time", lambda f, c: f.true_talk_s[c], lambda f, c: f.measured_talk_s[c], TARGET_TALK),
            ("turn count", lambda f, c: f.true_turns[c], lambda f, c: f.measured_turns[c], TARGET_TURNS),
        ):
            errors = [relative(sum(measured_of(f, c) for f in figures), sum(true_of(f, c) for f in figures)) for c in (0, 1)]
            worst = [max(abs(relative(measured_of(f, c), true_of(f, c))) for f in figures) for c in (0, 1)]
            print(f"- [{_verdict(max(map(abs, errors)) <= target)}] {name}: {what} within {target:.0%} per channel, "
                  f"over the {n} calls: channel 0 {_pct(errors[0])}, channel 1 {_pct(errors[1])}; on every call: "
                  f"{_verdict(max(worst) <= target)} (worst call: channel 0 {worst[0]:.1%}, channel 1 {worst[1]:.1%})")
        true_overlap = sum(f.true_overlap_s for f in figures)
        error = relative(sum(f.measured_overlap_s for f in figures), true_overlap)
        worst = max(abs(relative(f.measured_overlap_s, f.true_overlap_s)) for f in figures)
        print(f"- [{_verdict(abs(error) <= TARGET_OVERLAP)}] {name}: total overlap within {TARGET_OVERLAP:.0%}, over "
              f"the {n} calls: {_pct(error)} of {true_overlap:.1f} s; on every call: "
              f"{_verdict(worst <= TARGET_OVERLAP)} (worst call {worst:.1%})")
        found, designed = sum(f.designed_found for f in figures), sum(f.designed_overlaps for f in figures)
        print(f"- [{_verdict(found == designed)}] {name}: every designed overlap >= {TARGET_FOUND_S:g} s found "
              f"(measured overlap over at least {FOUND_SHARE:.0%} of it): {found} of {designed}, {n} calls")
        designed_i, found_i = sum(f.designed_interruptions for f in figures), sum(f.interruptions_found for f in figures)
        flagged = sum(f.measured_interruptions for f in figures)
        print(f"- (no target) {name}: interruptions recall {found_i}/{designed_i}"
              f"{f' = {found_i / designed_i:.0%}' if designed_i else ''}, precision {found_i}/{flagged}"
              f"{f' = {found_i / flagged:.0%}' if flagged else ''}, {n} calls")


def _level(text: str) -> float | None:
    return None if text == "recorded" else float(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_SOURCE),
                        help="RAVDESS folder (Actor_XX/*.flac|wav); absent: synthetic utterances")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--utterances", type=int, default=40, help="utterances per call, half on each channel")
    parser.add_argument("--peak-dbfs", type=_level, default=PEAK_DBFS,
                        help="level of each utterance's loudest 10 ms frame, dBFS; 'recorded': as recorded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/ser-analytics-truth")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of conf/score.toml, as the scoring job's --set (e.g. vad.bridge_gap_s=0.6)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = command_line("analytics_truth.py", argv)
    config = resolve_config(ScoreJobConfig, SCORE_CONFIG, args.overrides)
    audio = AudioConfig()
    rate = audio.target_sample_rate_hz
    data = Path(args.data)
    actors = ravdess_files(data) if data.is_dir() else {}
    if actors:
        source = f"RAVDESS clips from {data} ({len(actors)} actors, two per call)"
    else:
        source = f"synthetic utterances (synth_utterance): no RAVDESS clips under {data}"
        log.warning("no RAVDESS clips under %s: the calls are built from synthetic utterances", data)
    work = Path(args.work_dir)
    per_channel = args.utterances // 2
    results: dict[str, list[tuple[str, CallFigures]]] = {name: [] for name, _, _ in VARIANTS}
    for index in range(args.calls):
        if actors:
            utterances, source_rate, who = ravdess_utterances(actors, index, per_channel, args.seed, args.peak_dbfs)
        else:
            utterances, source_rate, who = synthetic_utterances(index, per_channel, args.seed, args.peak_dbfs)
        rng = np.random.default_rng([args.seed, index])
        truth = lay_out(tuple([u.size for u in channel] for channel in utterances), source_rate, rng,
                        analytics=config.analytics)
        call = mix_call(truth, utterances, rng)
        for name, sample_rate, encoding in VARIANTS:
            path = work / f"call{index:02d}-{encoding}-{sample_rate}{extension_for(encoding)}"
            write_variant(path, call, source_rate, sample_rate=sample_rate, encoding=encoding)
            _, turns = speech_turns(path, audio, config, channels="all")
            results[name].append((f"{index}: {who}", measure_call(truth, [regions for _, regions in turns], rate, config)))
        log.info("call %d/%d (%s): %.0f s, %d utterances placed, %d designed overlaps, %d interruptions", index + 1,
                 args.calls, who, truth.n_samples / source_rate, len(truth.utterances), len(truth.overlaps),
                 len(truth.interruptions))

    print("\n## Call analytics against the truth of designed calls\n")
    print(f"command: `{command}`\n")
    level = "as recorded" if args.peak_dbfs is None else f"loudest 10 ms frame at {args.peak_dbfs:g} dBFS"
    print(f"utterances: {source}; {level}, line noise {NOISE_DBFS:g} dBFS; {args.calls} calls of up to "
          f"{2 * per_channel} utterances; seed {args.seed}; "
          f"speech turns measured at {rate} Hz with conf/score.toml{' and --set ' + ' '.join(args.overrides) if args.overrides else ''}"
          f" (vad: bridge_gap_s {config.vad.bridge_gap_s}, pad_s {config.vad.pad_s}, min_speech_s {config.vad.min_speech_s}; "
          f"analytics: interruption_after_s {config.analytics.interruption_after_s}, "
          f"interruption_stop_s {config.analytics.interruption_stop_s})")
    for name, calls in results.items():
        print_table(name, calls)
    print_summary({name: [figures for _, figures in calls] for name, calls in results.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
