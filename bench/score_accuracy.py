"""Does accuracy survive the call pipeline? Held-out RAVDESS actors talking to each other on stereo calls.

Usage::

    python bench/score_accuracy.py --bundle /models/fused-core6 \\
        [--cnn-bundle /models/cnn-core6] [--data ../shared/data/ravdess-speech-16k] [--actors 9 16 19 20 21] \\
        [--variants all neutral] [--gap-s 0.5 1.5] [--encoding ulaw] [--sample-rate 8000] [--seed 0] \\
        [--work-dir /tmp/ser-score-accuracy] [--set vad.bridge_gap_s=0.6 ...]

``--encoding pcm16 --sample-rate 16000`` gives the clean variant (no telephone band, no resampling).
The calls are scored with the scoring job's settings (``conf/score.toml``), which ``--set``
overrides as the job's ``--set`` does.

Calls. With held-out actors ``a_0 .. a_{n-1}``, call ``i`` puts ``a_i`` on channel 0 and
``a_{(i+1) mod n}`` on channel 1, so that every actor speaks once on each channel, in another
shuffled order each time (seeded from ``--seed``). Turns alternate between the channels (a clip on
channel 0, a pause, a clip on channel 1, a pause, ...; when one actor has no clips left the other
goes on alone), pauses drawn uniformly from ``--gap-s``, with -60 dBFS line noise on both
channels. At 8 kHz each channel goes through the telephone channel (300–3400 Hz band-pass, then
resampling); the call is written with :func:`ser_udfs.synthetic.calls.write_call` in ``--encoding``.
What each channel holds (``--variants``): ``all``, every clip of the actor that the bundle's
taxonomy keeps; ``neutral`` (mostly neutral, as real calls are), every clip the taxonomy maps to
``neutral`` plus two of each other label (seeded choice).

Models, from the one ``--bundle``: a CNN fused with per-speaker standardised statistics gives both
"CNN alone" (its part that needs no speaker statistics: ``adaptation.mode = "off"``) and "adaptive"
(each channel standardised as one speaker: ``adaptation.mode = "speaker"``); any other bundle is
measured alone, without adaptation. ``--cnn-bundle`` adds a separately trained bundle, scored
without adaptation.

For each variant and model, one table of n, WA (accuracy), UA and macro-F1:

1. clips alone, clean, through the training path (preprocess → features → model; the adaptive
   model takes each actor's clips of the variant as one speaker, as a channel is taken);
2. the same clips alone through the telephone channel (at 8 kHz only);
3. turns in calls: the calls scored by :func:`ser_udfs.calls.stream.score_call`; each placed clip
   gets the mean probabilities of the windows of the speech turns that overlap it (a turn
   overlapping two clips goes to the one it overlaps most); clips no window reaches are counted,
   and row 2 (row 1 at 16 kHz) is repeated on exactly the placed clips turns reached;
4. windows in calls: each scored window against the clip of its channel it overlaps most
   (windows on noise only are left out and counted).

Then a summary: adaptive against CNN alone in calls per variant, the adaptation used per channel,
and the issue's targets with PASS/MISS: adaptive UA in calls at least 0.53 (core6), at least CNN
alone + 0.05 with ``all`` clips and + 0.03 on ``neutral`` channels, and per-turn UA within 0.03
of clip-by-clip UA (through the telephone channel at 8 kHz, clean otherwise), also on the same
placed clips.

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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._command import command_line  # noqa: E402
from bench._corpus import DEFAULT_SOURCE, read_mono  # noqa: E402
from ser_udfs.audio.preprocess import preprocess, resample  # noqa: E402
from ser_udfs.calls.config import CallScoringConfig  # noqa: E402
from ser_udfs.calls.stream import ChannelScores, score_call, window_batch  # noqa: E402
from ser_udfs.corpora import parse_clip_path  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.score import ScoreJobConfig  # noqa: E402
from ser_udfs.synthetic.calls import extension_for, telephone_filter, write_call  # noqa: E402
from training.inference import CallModel, load_call_model  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402
from training.taxonomy import Taxonomy  # noqa: E402

SCORE_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "score.toml"
log = logging.getLogger("bench.score_accuracy")

NOISE_DBFS = -60.0
NEUTRAL_LABEL = "neutral"
#: Clips of each label other than neutral on a ``neutral`` channel.
OTHER_CLIPS_PER_LABEL = 2
VARIANTS = ("all", "neutral")
#: The issue's targets.
TARGET_ADAPTIVE_UA = 0.53
TARGET_GAIN = {"all": 0.05, "neutral": 0.03}
TARGET_TURN_VS_CLIP = 0.03
BATCH_CLIPS = 32


@dataclass(frozen=True)
class Clip:
    """A labelled RAVDESS clip: ``label`` is the bundle's (after its taxonomy)."""

    path: Path
    label: str
    actor: int


@dataclass(frozen=True)
class PlacedClip:
    """A clip inside an assembled call: on ``channel``, from ``start_s`` to ``end_s``."""

    clip: Clip
    channel: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Model:
    """One measured model: a loaded bundle and whether each channel (or actor) is adapted to."""

    name: str
    call_model: CallModel
    adapt: bool
    base: CallScoringConfig

    def scoring_config(self) -> CallScoringConfig:
        """The scoring job's settings (``conf/score.toml`` and ``--set``), adaptation as :attr:`adapt` says
        (window probabilities are compared unsmoothed, so smoothing does not matter here)."""
        return replace(self.base, adaptation=replace(self.base.adaptation, mode="speaker" if self.adapt else "off"))


@dataclass
class CallTally:
    """What the scored calls of one variant and model add up to (class indices into the labels)."""

    turn_truth: list[int] = field(default_factory=list)
    turn_predicted: list[int] = field(default_factory=list)
    #: The clip of each ``turn_truth`` entry: the placed clips windows reached, for clip-by-clip on the same clips.
    turn_clips: list[Path] = field(default_factory=list)
    clips_without_window: int = 0
    clips_placed: int = 0
    window_truth: list[int] = field(default_factory=list)
    window_predicted: list[int] = field(default_factory=list)
    noise_windows: int = 0
    channels_adapted: int = 0
    channels_not_adapted: int = 0


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
    """300–3400 Hz band-pass of ``[n]`` audio, then resampling to ``target_rate``: float32 ``[m]``."""
    filtered = signal.sosfilt(telephone_filter(sample_rate), audio).astype(np.float32)
    return resample(filtered, sample_rate, target_rate, quality="HQ")


def actor_clips(data: Path, actor: int, taxonomy: Taxonomy, labels: Sequence[str]) -> list[Clip]:
    """The actor's clips (``Actor_XX/*.wav|flac``, sorted) whose label ``taxonomy`` maps into ``labels``."""
    files = sorted(p for p in (data / f"Actor_{actor:02d}").glob("*") if p.suffix.lower() in (".wav", ".flac"))
    clips = []
    for path in files:
        target = taxonomy.target(parse_clip_path(str(path)).label)
        if target in labels:
            clips.append(Clip(path, target, actor))
    return clips


def mostly_neutral(clips: Sequence[Clip], rng: np.random.Generator) -> list[Clip]:
    """Every neutral clip and :data:`OTHER_CLIPS_PER_LABEL` of each other label (all when fewer), in input order."""
    keep = {index for index, clip in enumerate(clips) if clip.label == NEUTRAL_LABEL}
    for label in sorted({clip.label for clip in clips} - {NEUTRAL_LABEL}):
        indices = [index for index, clip in enumerate(clips) if clip.label == label]
        keep.update(rng.choice(indices, size=min(OTHER_CLIPS_PER_LABEL, len(indices)), replace=False).tolist())
    return [clips[index] for index in sorted(keep)]


def channel_content(clips: Sequence[Clip], variant: str, *, seed: int) -> list[Clip]:
    """What one actor says on a channel in ``variant`` (``all`` or ``neutral``, the choice seeded per actor)."""
    if variant == "all" or not clips:
        return list(clips)
    return mostly_neutral(clips, np.random.default_rng([seed, clips[0].actor]))


def call_pairs(actors: Sequence[int]) -> list[tuple[int, int]]:
    """``(channel 0 actor, channel 1 actor)`` of each call: call ``i`` pairs ``a_i`` with ``a_{(i+1) mod n}``."""
    if len(actors) < 2:
        raise SystemExit(f"stereo calls need at least two held-out actors, got {list(actors)}")
    return [(actors[index], actors[(index + 1) % len(actors)]) for index in range(len(actors))]


def assemble_call(
    channels: tuple[Sequence[Clip], Sequence[Clip]], path: Path, *, gap_s: tuple[float, float], sample_rate: int,
    encoding: str, rng: np.random.Generator,
) -> list[PlacedClip]:
    """Write a stereo call of two actors' clips, turns alternating between the channels, to ``path``.

    Each channel's clips go in an order drawn from ``rng``; the call opens with a pause and every
    turn is followed by one (uniform in ``gap_s``); while one channel speaks the other holds only
    line noise (:data:`NOISE_DBFS`, on both channels throughout). At 8 kHz and below each channel
    goes through :func:`telephone`; otherwise it is only resampled (when the rates differ).

    Parameters
    ----------
    channels
        The clips of channel 0 and of channel 1, all at one sample rate.
    rng
        Draws the clip orders, the pauses and the noise.

    Returns
    -------
    The placed clips in time order; times in seconds of the written file.
    """
    orders = [[channel[index] for index in rng.permutation(len(channel))] for channel in channels]
    turns = []  # (channel, clip), alternating while both have clips left
    for position in range(max(map(len, orders))):
        turns += [(number, order[position]) for number, order in enumerate(orders) if position < len(order)]
    audio = [read_mono(clip.path) for _, clip in turns]
    if not audio:
        raise SystemExit(f"no clips for the call {path}")
    source_rate = audio[0][1]
    for (_, clip), (_, rate) in zip(turns, audio):
        if rate != source_rate:
            raise SystemExit(f"{clip.path} is at {rate} Hz, {turns[0][1].path} at {source_rate} Hz")
    starts, position = [], int(rng.uniform(*gap_s) * source_rate)
    for samples, _ in audio:
        starts.append(position)
        position += samples.size + int(rng.uniform(*gap_s) * source_rate)
    call = (rng.standard_normal((2, position)) * 10 ** (NOISE_DBFS / 20)).astype(np.float32)
    placed = []
    for (number, clip), (samples, _), start in zip(turns, audio, starts):
        call[number, start : start + samples.size] += samples
        placed.append(PlacedClip(clip, number, start / source_rate, (start + samples.size) / source_rate))
    if sample_rate <= 8000:
        channel_audio = [telephone(channel, source_rate, sample_rate) for channel in call]
    else:
        channel_audio = [resample(channel, source_rate, sample_rate, quality="HQ") for channel in call]
    write_call(path, np.clip(np.stack(channel_audio), -1, 1), sample_rate, encoding=encoding)
    return placed


def clip_outputs(call_model: CallModel, paths: Sequence[Path], *, telephone_rate: int | None) -> np.ndarray:
    """First phase of the training path on each clip alone (:meth:`CallModel.window_outputs`): ``[n, m]``.

    ``telephone_rate``: pass each clip through :func:`telephone` at that rate first.
    """
    config = call_model.feature_config
    clips = []
    for path in paths:
        mono, rate = read_mono(path)
        if telephone_rate:
            mono, rate = telephone(mono, rate, telephone_rate), telephone_rate
        clips.append(preprocess(mono[None, :], rate, config.audio))
    outputs = [
        call_model.window_outputs(window_batch(np.stack(clips[start : start + BATCH_CLIPS]), config))
        for start in range(0, len(clips), BATCH_CLIPS)
    ]
    return np.concatenate(outputs).astype(np.float32)


def clip_probabilities(model: Model, outputs: np.ndarray, actors: np.ndarray) -> np.ndarray:
    """Second phase on clips alone: each actor's clips as one channel. ``outputs [n, m]``, ``actors [n]`` → ``[n, k]``."""
    probabilities = np.zeros((len(outputs), len(model.call_model.labels)), dtype=np.float32)
    for actor in np.unique(actors):
        rows = actors == actor
        probabilities[rows] = model.call_model.channel_probabilities(outputs[rows], adapt=model.adapt)
    return probabilities


def _overlaps(spans: np.ndarray, clip_spans: np.ndarray) -> np.ndarray:
    """Samples shared by each span ``[a, 2]`` and each clip span ``[b, 2]`` (0 when apart): ``[a, b]``."""
    shared = np.minimum(spans[:, None, 1], clip_spans[None, :, 1]) - np.maximum(spans[:, None, 0], clip_spans[None, :, 0])
    return np.maximum(shared, 0)


def _most_overlapped(spans: np.ndarray, clip_spans: np.ndarray) -> np.ndarray:
    """Index of the clip each span overlaps most, -1 for a span that overlaps none: int ``[a]``."""
    if len(clip_spans) == 0 or len(spans) == 0:
        return np.full(len(spans), -1, dtype=np.int64)
    overlap = _overlaps(spans, clip_spans)
    return np.where(overlap.max(axis=1) > 0, overlap.argmax(axis=1), -1)


def clip_spans(placed: Sequence[PlacedClip], sample_rate: int) -> np.ndarray:
    """float64 ``[n, 2]``: start and end of each placed clip in samples at ``sample_rate``."""
    return np.array([(clip.start_s, clip.end_s) for clip in placed], dtype=np.float64).reshape(-1, 2) * sample_rate


def turn_predictions(channel: ChannelScores, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's mean window probabilities over the turns given to it (turn → the clip it overlaps most).

    Parameters
    ----------
    channel
        A scored channel (``regions``, ``turns``, ``probabilities``).
    spans
        ``[c, 2]``: the clips on that channel, in samples at the channel's rate.

    Returns
    -------
    probabilities
        float64 ``[c, k]``; zeros for a clip without windows.
    covered
        bool ``[c]``: whether any window reached the clip.
    """
    n_classes = channel.probabilities.shape[1]
    sums, counts = np.zeros((len(spans), n_classes)), np.zeros(len(spans))
    owner = _most_overlapped(channel.regions, spans)[channel.turns] if len(channel.turns) else np.zeros(0, np.int64)
    kept = owner >= 0
    np.add.at(sums, owner[kept], channel.probabilities[kept])
    np.add.at(counts, owner[kept], 1)
    return sums / np.maximum(counts, 1)[:, None], counts > 0


def window_clips(channel: ChannelScores, spans: np.ndarray) -> np.ndarray:
    """Index into ``spans [c, 2]`` of the clip each window of ``channel`` overlaps most, -1 on noise only: ``[n_windows]``."""
    return _most_overlapped(channel.windows, spans)


def tally_call(tally: CallTally, channels: Sequence[ChannelScores], placed: Sequence[PlacedClip], sample_rate: int,
               labels: Sequence[str]) -> None:
    """Add one scored call (channels named ``"0"``, ``"1"``) to ``tally``."""
    for channel in channels:
        own = [clip for clip in placed if clip.channel == int(channel.name)]
        spans = clip_spans(own, sample_rate)
        truth = np.array([labels.index(clip.clip.label) for clip in own], dtype=np.int64)
        probabilities, covered = turn_predictions(channel, spans)
        tally.turn_truth += truth[covered].tolist()
        tally.turn_predicted += probabilities[covered].argmax(axis=1).tolist()
        tally.turn_clips += [clip.clip.path for clip, reached in zip(own, covered) if reached]
        tally.clips_without_window += int((~covered).sum())
        tally.clips_placed += len(own)
        owners = window_clips(channel, spans)
        on_clip = owners >= 0
        tally.window_truth += truth[owners[on_clip]].tolist()
        tally.window_predicted += channel.probabilities[on_clip].argmax(axis=1).tolist()
        tally.noise_windows += int((~on_clip).sum())
        if channel.adaptation == "speaker":
            tally.channels_adapted += 1
        else:
            tally.channels_not_adapted += 1


def _metrics(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    return classification_metrics(np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64), labels)


def _row(name: str, metrics: dict) -> str:
    return f"| {name} | {metrics['n']} | {metrics['accuracy']:.3f} | {metrics['ua']:.3f} | {metrics['macro_f1']:.3f} |"


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


@dataclass
class Measurement:
    """The rows of one variant and model: ``metrics`` by row name, and the call tally.

    ``same_clips``: clip by clip (through the telephone at 8 kHz, clean otherwise) on exactly the
    placed clips that turns in calls reached, each as often as it was placed: the per-turn figure's
    reference without the clips the speech detector missed.
    """

    clean: dict
    telephone: dict | None
    turns: dict
    windows: dict
    tally: CallTally
    same_clips: dict

    @property
    def clip_reference(self) -> dict:
        """Clip-by-clip metrics the per-turn figure is held against: through the telephone when measured."""
        return self.telephone if self.telephone is not None else self.clean


def print_tables(variant: str, model: Model, measurement: Measurement, sample_rate: int) -> None:
    """One markdown table: clips alone (clean, telephone), turns and windows in calls."""
    tally = measurement.tally
    print(f"\n### {variant} clips, {model.name}\n")
    print("| what | n | WA | UA | macro-F1 |")
    print("|---|---|---|---|---|")
    print(_row("clips alone, clean (training path)", measurement.clean))
    if measurement.telephone is not None:
        print(_row(f"clips alone, telephone {sample_rate} Hz (training path)", measurement.telephone))
    print(_row("clips alone, the placed clips turns reached (" + ("telephone" if measurement.telephone else "clean")
               + ", training path)", measurement.same_clips))
    print(_row("turns in calls (mean of the windows of the turns over each clip)", measurement.turns))
    print(_row("windows in calls (against the clip each overlaps most)", measurement.windows))
    print(f"\nclips placed in calls: {tally.clips_placed}; with no window: {tally.clips_without_window}; "
          f"windows on noise only (left out): {tally.noise_windows}; channels adapted to the speaker: "
          f"{tally.channels_adapted}, not adapted: {tally.channels_not_adapted}")


def print_summary(results: dict[tuple[str, str], Measurement], models: Sequence[Model], taxonomy: str,
                  sample_rate: int) -> None:
    """Adaptive against each non-adaptive model in calls, and the issue's targets, PASS or MISS."""
    variants = list(dict.fromkeys(variant for variant, _ in results))
    adaptive = [model for model in models if model.adapt]
    plain = [model for model in models if not model.adapt]
    reference = "telephone" if sample_rate <= 8000 else "clean"
    print("\n## Summary\n")
    print("| variant | model | UA clips alone (" + reference + ") | UA turns in calls | UA windows in calls "
          "| channels adapted / not |")
    print("|---|---|---|---|---|---|")
    for (variant, name), measurement in results.items():
        print(f"| {variant} | {name} | {measurement.clip_reference['ua']:.3f} | {measurement.turns['ua']:.3f} | "
              f"{measurement.windows['ua']:.3f} | {measurement.tally.channels_adapted} / "
              f"{measurement.tally.channels_not_adapted} |")
    print("\nTargets (UA in calls = turns in calls):")
    if not adaptive:
        print("- adaptive targets: not measured, the bundle does not adapt to the speaker (only its one "
              "non-adaptive path was run)")
    for model in adaptive:
        for variant in variants:
            turns_ua = results[(variant, model.name)].turns["ua"]
            print(f"- [{_verdict(turns_ua >= TARGET_ADAPTIVE_UA)}] {variant}: {model.name} UA in calls "
                  f"{turns_ua:.3f} >= {TARGET_ADAPTIVE_UA} (target set for core6; this bundle: {taxonomy})")
            for other in plain:
                gain = turns_ua - results[(variant, other.name)].turns["ua"]
                window_gain = results[(variant, model.name)].windows["ua"] - results[(variant, other.name)].windows["ua"]
                target = TARGET_GAIN[variant]
                print(f"- [{_verdict(gain >= target)}] {variant}: {model.name} - {other.name} UA in calls "
                      f"{gain:+.3f} >= +{target} (windows in calls: {window_gain:+.3f})")
    for (variant, name), measurement in results.items():
        gap = measurement.turns["ua"] - measurement.clip_reference["ua"]
        same = measurement.turns["ua"] - measurement.same_clips["ua"]
        print(f"- [{_verdict(abs(gap) <= TARGET_TURN_VS_CLIP)}] {variant}, {name}: per-turn UA - clip-by-clip UA "
              f"({reference}) {gap:+.3f}, within {TARGET_TURN_VS_CLIP}; on the same placed clips {same:+.3f} "
              f"[{_verdict(abs(same) <= TARGET_TURN_VS_CLIP)}]")


def measure_variant(
    variant: str, models: Sequence[Model], content: dict[int, list[Clip]], pairs: Sequence[tuple[int, int]],
    outputs: dict[tuple[str, Path, bool], np.ndarray], args: argparse.Namespace, labels: Sequence[str],
) -> dict[str, Measurement]:
    """Assemble and score the variant's calls with every model; the four rows per model."""
    clips = [clip for actor in content for clip in content[actor]]
    truth = np.array([labels.index(clip.label) for clip in clips], dtype=np.int64)
    actors = np.array([clip.actor for clip in clips], dtype=np.int64)
    tallies = {model.name: CallTally() for model in models}
    work = Path(args.work_dir)
    for index, (first, second) in enumerate(pairs):
        path = work / f"{variant}-call{index:02d}-a{first:02d}-a{second:02d}-{args.encoding}-{args.sample_rate}"
        path = path.with_suffix(extension_for(args.encoding))
        placed = assemble_call(
            (content[first], content[second]), path, gap_s=tuple(args.gap_s), sample_rate=args.sample_rate,
            encoding=args.encoding, rng=np.random.default_rng([args.seed, index]),
        )
        for model in models:
            scores = score_call(path, model.call_model, model.scoring_config())
            tally_call(tallies[model.name], scores.channels, placed, scores.geometry.sample_rate, labels)
            log.info("%s call %d/%d (actors %d | %d, %.0f s), %s: %d windows, adaptation %s", variant, index + 1,
                     len(pairs), first, second, scores.info.duration_s, model.name, scores.windows_scored,
                     [channel.adaptation for channel in scores.channels])
    measurements = {}
    for model in models:
        rows = {}
        tally = tallies[model.name]
        telephone = args.sample_rate <= 8000
        predicted: dict[bool, dict[Path, int]] = {}
        for condition in (False, True) if telephone else (False,):
            stacked = np.stack([outputs[(model.name, clip.path, condition)] for clip in clips])
            classes = clip_probabilities(model, stacked, actors).argmax(axis=1)
            rows[condition] = classification_metrics(truth, classes, labels)
            predicted[condition] = {clip.path: int(label) for clip, label in zip(clips, classes)}
        reference = predicted[telephone]  # what the per-turn figure is held against (Measurement.clip_reference)
        measurements[model.name] = Measurement(
            clean=rows[False], telephone=rows.get(True), tally=tally,
            turns=_metrics(tally.turn_truth, tally.turn_predicted, labels),
            windows=_metrics(tally.window_truth, tally.window_predicted, labels),
            same_clips=_metrics(tally.turn_truth, [reference[path] for path in tally.turn_clips], labels),
        )
    return measurements


def build_models(args: argparse.Namespace) -> list[Model]:
    """CNN alone and adaptive from ``--bundle`` (or its one path when it does not adapt), then ``--cnn-bundle``."""
    base = resolve_config(ScoreJobConfig, SCORE_CONFIG, args.overrides)
    bundle = load_call_model(args.bundle)
    if bundle.adapts_to_speaker:
        models = [Model("CNN alone", bundle, False, base), Model("adaptive", bundle, True, base)]
    else:
        log.warning("%s does not adapt to the speaker: only its one non-adaptive path is measured", args.bundle)
        models = [Model("bundle (not adaptive)", bundle, False, base)]
    if args.cnn_bundle:
        other = load_call_model(args.cnn_bundle)
        if other.labels != bundle.labels:
            raise SystemExit(f"--cnn-bundle has labels {other.labels}, --bundle {bundle.labels}; they must match")
        models.append(Model(f"separate CNN ({Path(args.cnn_bundle).name})", other, False, base))
    return models


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory (a fused, speaker-adaptive one)")
    parser.add_argument("--cnn-bundle", help="a separately trained non-adaptive bundle, measured as a third model")
    parser.add_argument("--data", default=str(DEFAULT_SOURCE), help="RAVDESS folder (Actor_XX/*.flac|wav)")
    parser.add_argument("--actors", type=int, nargs="*", help="held-out actor numbers (default: the bundle's holdout)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="channel content: all clips, or mostly neutral")
    parser.add_argument("--gap-s", type=float, nargs=2, default=[0.5, 1.5], metavar=("MIN", "MAX"))
    parser.add_argument("--encoding", default="ulaw", help="ulaw | alaw | pcm16 | gsm (see ser_udfs.synthetic.calls)")
    parser.add_argument("--sample-rate", type=int, default=8000, help="8000 and below: through the telephone channel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/ser-score-accuracy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of conf/score.toml for the calls, as the scoring job's --set "
                             "(e.g. vad.bridge_gap_s=0.6)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    command = command_line("score_accuracy.py", argv)
    models = build_models(args)
    bundle = models[0].call_model.bundle
    labels = list(bundle.labels)
    if "neutral" in args.variants and NEUTRAL_LABEL not in labels:
        raise SystemExit(f"the neutral variant needs a {NEUTRAL_LABEL!r} label; the bundle has {labels}")
    args.actors = held_out_actors(Path(args.bundle), args.actors)
    pairs = call_pairs(args.actors)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    log.info("bundle %s (%s, labels %s); held-out actors %s; models %s", args.bundle, bundle.taxonomy.name, labels,
             args.actors, [model.name for model in models])

    clips = {actor: actor_clips(Path(args.data), actor, bundle.taxonomy, labels) for actor in args.actors}
    empty = [actor for actor, own in clips.items() if not own]
    if empty:
        raise SystemExit(f"actors {empty} have no clips with a label of the bundle under {args.data}")
    contents = {variant: {actor: channel_content(own, variant, seed=args.seed) for actor, own in clips.items()}
                for variant in args.variants}
    paths = sorted({clip.path for content in contents.values() for own in content.values() for clip in own})
    outputs: dict[tuple[str, Path, bool], np.ndarray] = {}
    for condition in (False, True) if args.sample_rate <= 8000 else (False,):
        computed: dict[int, np.ndarray] = {}
        for model in models:
            if id(model.call_model) not in computed:
                log.info("clips alone (%s): %d clips, %s", "telephone" if condition else "clean", len(paths), model.name)
                computed[id(model.call_model)] = clip_outputs(
                    model.call_model, paths, telephone_rate=args.sample_rate if condition else None
                )
            outputs.update({(model.name, path, condition): row
                            for path, row in zip(paths, computed[id(model.call_model)])})

    results: dict[tuple[str, str], Measurement] = {}
    for variant in args.variants:
        measured = measure_variant(variant, models, contents[variant], pairs, outputs, args, labels)
        results.update({(variant, name): measurement for name, measurement in measured.items()})

    print(f"\n## Accuracy through the call pipeline: {args.bundle} ({bundle.taxonomy.name})\n")
    print(f"command: `{command}`\n")
    print(f"stereo calls, one held-out actor per channel, pairs {pairs}; {args.encoding} {args.sample_rate} Hz"
          f"{', telephone band' if args.sample_rate <= 8000 else ''}; pauses {args.gap_s[0]:g}-{args.gap_s[1]:g} s; "
          f"seed {args.seed}")
    for (variant, name), measurement in results.items():
        print_tables(variant, next(model for model in models if model.name == name), measurement, args.sample_rate)
    print_summary(results, models, bundle.taxonomy.name, args.sample_rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
