"""Does accuracy survive the call pipeline? Held-out labelled clips assembled into telephone calls.

Usage::

    python bench/score_accuracy.py --bundle /models/cnn-core6 \\
        [--data ../shared/data/ravdess-speech-16k] [--actors 21 22 23 24] [--gap-s 0.5 3.0] \\
        [--encoding ulaw] [--sample-rate 8000] [--seed 0] [--work-dir /tmp/ser-score-accuracy]

For each held-out actor, the actor's clips (those the bundle's taxonomy keeps) are put in a
shuffled order with pauses of line noise between them (``--gap-s`` range), band-limited to
300–3400 Hz, resampled to 8 kHz and written as µ-law WAV: one mono call per actor. The calls are
scored with :func:`ser_udfs.calls.stream.score_call`, and every scored window is compared with the label
of the clip it overlaps most. The same clips are also classified one by one through the
training path (decode → preprocess → features → model), clean and through the same telephone
channel, so the table separates what the channel costs from what the call pipeline costs.

Held-out actors: the bundle's holdout test speakers (``metrics.json``) when it was trained on a
holdout split; otherwise pass ``--actors`` (and mind whether the model saw them in training).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._corpus import DEFAULT_SOURCE  # noqa: E402
from ser_udfs.calls.stream import CallScoringConfig, SmoothingConfig, call_timeline, score_call  # noqa: E402
from ser_udfs.corpora import parse_clip_path  # noqa: E402
from ser_udfs.features.compute import compute_features_batch  # noqa: E402
from ser_udfs.audio.preprocess import preprocess, resample  # noqa: E402
from ser_udfs.synthetic.calls import telephone_filter, write_call  # noqa: E402
from training.inference import load_scoring_model  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402

log = logging.getLogger("bench.score_accuracy")

NOISE_DBFS = -60.0


@dataclass(frozen=True)
class PlacedClip:
    """A labelled clip inside an assembled call."""

    path: Path
    label: str
    start_s: float
    end_s: float


def held_out_actors(bundle_dir: Path, given: list[int] | None) -> list[int]:
    """``--actors``, else the RAVDESS actors of the bundle's holdout test side."""
    if given:
        return given
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    speakers = (metrics.get("holdout") or {}).get("test_speakers") or []
    actors = sorted(int(key.split("/")[1]) for key in speakers if key.startswith("ravdess/"))
    if not actors:
        raise SystemExit(
            f"{bundle_dir} was not trained on a holdout split with RAVDESS test speakers; pass --actors "
            "(actors the model did not see in training)"
        )
    return actors


def telephone(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """300–3400 Hz band-pass, then resampling to ``target_rate`` (``[n]`` float32)."""
    filtered = signal.sosfilt(telephone_filter(sample_rate), audio).astype(np.float32)
    return resample(filtered, sample_rate, target_rate, quality="HQ")


def assemble_call(
    clips: list[tuple[Path, str]], path: Path, *, gap_s: tuple[float, float], sample_rate: int, encoding: str, seed: int
) -> list[PlacedClip]:
    """Write the clips, shuffled, with noise pauses, through the telephone channel, to ``path``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    pieces, placed, time_s = [], [], 0.0
    source_rate = None
    for index in order:
        clip_path, label = clips[index]
        audio, rate = sf.read(clip_path, dtype="float32", always_2d=True)
        source_rate = source_rate or rate
        if rate != source_rate:
            raise SystemExit(f"{clip_path} is at {rate} Hz, the others at {source_rate} Hz")
        gap = np.zeros(int(rng.uniform(*gap_s) * rate), dtype=np.float32)
        mono = audio.mean(axis=1)
        pieces += [gap, mono]
        time_s += gap.size / rate
        placed.append(PlacedClip(clip_path, label, time_s, time_s + mono.size / rate))
        time_s += mono.size / rate
    pieces.append(np.zeros(int(gap_s[1] * source_rate), dtype=np.float32))
    call = np.concatenate(pieces)
    call += (rng.standard_normal(call.size) * 10 ** (NOISE_DBFS / 20)).astype(np.float32)
    write_call(path, np.clip(telephone(call, source_rate, sample_rate), -1, 1), sample_rate, encoding=encoding)
    return placed


def clip_probabilities(model, paths: list[Path], *, through_telephone: int | None) -> np.ndarray:
    """The training path on each clip alone: ``[n_clips, n_classes]``."""
    config = model.feature_config
    clips = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        if through_telephone:
            mono = telephone(mono, rate, through_telephone)
            rate = through_telephone
        clips.append(preprocess(mono[None, :], rate, config.audio))
    probabilities = []
    for start in range(0, len(clips), 32):
        batch = np.stack(clips[start : start + 32])
        probabilities.append(model.predict_proba(compute_features_batch(batch, config.audio.target_sample_rate_hz, config)))
    return np.concatenate(probabilities)


@dataclass
class Tally:
    """What the calls scored so far add up to."""

    window_truth: list[int] = field(default_factory=list)
    window_predicted: list[int] = field(default_factory=list)
    clip_rows: list[tuple[PlacedClip, np.ndarray | None]] = field(default_factory=list)
    timeline_agree_s: float = 0.0
    timeline_total_s: float = 0.0


def actor_clips(model, data: Path, actor: int) -> list[tuple[Path, str]]:
    """The actor's clips whose label the model's taxonomy keeps: ``(path, model label)``."""
    files = sorted(p for p in (data / f"Actor_{actor:02d}").glob("*") if p.suffix.lower() in (".wav", ".flac"))
    clips = []
    for path in files:
        target = model.taxonomy.target(parse_clip_path(str(path)).label)
        if target in model.labels:
            clips.append((path, target))
    return clips


def tally_call(scores, placed: list[PlacedClip], labels: list[str], tally: Tally) -> None:
    """Add one scored call: each window against the clip it overlaps most, each clip's mean
    window probabilities, and the (smoothed) timeline's agreement with the clips."""
    channel = scores.channels[0]
    rate, window = scores.geometry.sample_rate, scores.geometry.window_samples
    starts = np.array([clip.start_s for clip in placed]) * rate
    ends = np.array([clip.end_s for clip in placed]) * rate
    per_clip: dict[int, list[np.ndarray]] = {}
    for start, probabilities in zip(channel.window_starts, channel.probabilities):
        overlap = np.minimum(ends, start + window) - np.maximum(starts, start)
        best = int(np.argmax(overlap))
        if overlap[best] <= 0:
            continue  # noise between clips taken for speech
        tally.window_truth.append(labels.index(placed[best].label))
        tally.window_predicted.append(int(np.argmax(probabilities)))
        per_clip.setdefault(best, []).append(probabilities)
    for index, clip in enumerate(placed):
        tally.clip_rows.append((clip, np.mean(per_clip[index], axis=0) if index in per_clip else None))
    segments, _ = call_timeline(scores, CallScoringConfig())
    for segment in segments:
        if segment.label is None:
            continue
        for clip in placed:
            overlap = min(segment.end_s, clip.end_s) - max(segment.start_s, clip.start_s)
            if overlap > 0:
                tally.timeline_total_s += overlap
                tally.timeline_agree_s += overlap * (segment.label == clip.label)


def print_report(model, tally: Tally, labels: list[str], args: argparse.Namespace, hop_s: float) -> None:
    """The accuracy table: clips alone (clean, telephone), clips in calls, windows, timeline."""
    paths = [clip.path for clip, _ in tally.clip_rows]
    truth = np.array([labels.index(clip.label) for clip, _ in tally.clip_rows])
    clean = clip_probabilities(model, paths, through_telephone=None).argmax(axis=1)
    phone = clip_probabilities(model, paths, through_telephone=args.sample_rate).argmax(axis=1)
    covered = np.array([mean is not None for _, mean in tally.clip_rows])
    in_call = np.array([np.argmax(mean) if mean is not None else -1 for _, mean in tally.clip_rows])
    rows = [
        ("clips alone, clean (training path)", truth, clean),
        (f"clips alone, telephone {args.sample_rate} Hz (training path)", truth, phone),
        ("clips in calls: mean of their windows", truth[covered], in_call[covered]),
        ("windows in calls (label of the clip overlapped most)", np.array(tally.window_truth), np.array(tally.window_predicted)),
    ]
    print()
    print(f"Accuracy through the call pipeline: {Path(args.bundle)}, actors {args.actors}, {args.encoding} {args.sample_rate} Hz, "
          f"pauses {args.gap_s[0]:g}-{args.gap_s[1]:g} s, hop {hop_s} s")
    print("| what | n | accuracy | UA | macro-F1 |")
    print("|---|---|---|---|---|")
    for name, y_true, y_pred in rows:
        metrics = classification_metrics(y_true, y_pred, labels)
        print(f"| {name} | {metrics['n']} | {metrics['accuracy']:.3f} | {metrics['ua']:.3f} | {metrics['macro_f1']:.3f} |")
    if tally.timeline_total_s:
        print(f"| timeline (smoothed segments), share of clip time labelled right | {tally.timeline_total_s:.0f} s | "
              f"{tally.timeline_agree_s / tally.timeline_total_s:.3f} | | |")
    print(f"\nclips that no scored window overlaps most (speech not detected, or every window over them "
          f"lies mostly on a neighbour): {int((~covered).sum())} of {len(tally.clip_rows)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory")
    parser.add_argument("--data", default=str(DEFAULT_SOURCE), help="RAVDESS folder (Actor_XX/*.flac|wav)")
    parser.add_argument("--actors", type=int, nargs="*", help="held-out actor numbers (default: the bundle's holdout)")
    parser.add_argument("--gap-s", type=float, nargs=2, default=[0.5, 3.0], metavar=("MIN", "MAX"))
    parser.add_argument("--encoding", default="ulaw", help="ulaw | alaw | pcm16 | gsm (see ser_udfs.synthetic.calls)")
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/ser-score-accuracy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    bundle_dir = Path(args.bundle)
    model = load_scoring_model(bundle_dir)
    labels = list(model.labels)
    args.actors = held_out_actors(bundle_dir, args.actors)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log.info("model %s, labels %s; held-out actors %s", bundle_dir, labels, args.actors)

    scoring = CallScoringConfig(smoothing=SmoothingConfig(windows=1))
    tally = Tally()
    for actor in args.actors:
        clips = actor_clips(model, Path(args.data), actor)
        if not clips:
            log.warning("actor %d: no clips with a label of the model", actor)
            continue
        call_path = work / f"actor{actor:02d}-{args.encoding}-{args.sample_rate}.wav"
        placed = assemble_call(
            clips, call_path, gap_s=tuple(args.gap_s), sample_rate=args.sample_rate, encoding=args.encoding,
            seed=args.seed + actor,
        )
        scores = score_call(call_path, model, scoring)
        tally_call(scores, placed, labels, tally)
        log.info("actor %d: %d clips, %.0f s call, %d windows", actor, len(placed), scores.info.duration_s, scores.windows_scored)
    print_report(model, tally, labels, args, scoring.window.hop_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
