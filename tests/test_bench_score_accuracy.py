"""The pure pieces of ``bench/score_accuracy.py``: call assembly, channel content, clip matching.

Tiny generated RAVDESS-named clips in ``tmp_path``; no Spark, no model, no shared data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.score_accuracy import (
    CallTally, Clip, PlacedClip, actor_clips, assemble_call, call_pairs, channel_content, clip_spans, tally_call,
    turn_predictions, window_clips,
)
from ser_udfs.calls.stream import ChannelScores
from training.taxonomy import Taxonomy

RATE = 16_000
CORE6 = Taxonomy("core6", ("angry", "disgust", "fear", "happy", "neutral", "sad"), {"calm": "neutral"})
#: RAVDESS emotion code -> label; 08 (surprise) is one core6 drops.
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
            "07": "disgust", "08": "surprise"}


def write_actor(root: Path, actor: int, codes: list[str], *, seed: int) -> list[Path]:
    """One tone clip per emotion code, of a different length each, named as RAVDESS names them."""
    rng = np.random.default_rng(seed)
    folder = root / f"Actor_{actor:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, code in enumerate(codes):
        intensity = "01" if code == "01" else f"{index % 2 + 1:02d}"
        path = folder / f"03-01-{code}-{intensity}-{index // 4 % 2 + 1:02d}-{index % 2 + 1:02d}-{actor:02d}.wav"
        samples = int(RATE * rng.uniform(0.3, 0.6))
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / RATE)
        sf.write(path, tone.astype(np.float32), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def test_call_pairs_put_each_actor_once_on_each_channel() -> None:
    pairs = call_pairs([9, 16, 19])
    assert pairs == [(9, 16), (16, 19), (19, 9)]
    assert sorted(first for first, _ in pairs) == sorted(second for _, second in pairs) == [9, 16, 19]
    with pytest.raises(SystemExit):
        call_pairs([9])


def test_actor_clips_keep_the_taxonomy_labels(tmp_path: Path) -> None:
    write_actor(tmp_path, 12, ["01", "02", "05", "08"], seed=0)
    clips = actor_clips(tmp_path, 12, CORE6, CORE6.labels)
    assert [clip.label for clip in clips] == ["neutral", "neutral", "angry"]
    assert {clip.actor for clip in clips} == {12}


def test_neutral_variant_keeps_every_neutral_clip_and_two_of_each_other_label() -> None:
    labels = ["neutral"] * 3 + ["angry"] * 4 + ["sad"] * 5 + ["fear"]
    clips = [Clip(Path(f"/x/{index:02d}.wav"), label, 7) for index, label in enumerate(labels)]
    chosen = channel_content(clips, "neutral", seed=3)
    counts = {label: sum(clip.label == label for clip in chosen) for label in set(labels)}
    assert counts == {"neutral": 3, "angry": 2, "sad": 2, "fear": 1}
    assert chosen == sorted(chosen, key=lambda clip: clip.path), "input order is kept"
    assert channel_content(clips, "neutral", seed=3) == chosen, "seeded"
    assert channel_content(clips, "all", seed=3) == clips


def test_assemble_call_alternates_one_actor_per_channel(tmp_path: Path) -> None:
    write_actor(tmp_path, 1, ["01", "03", "04"], seed=1)
    write_actor(tmp_path, 2, ["05", "06"], seed=2)
    first, second = (actor_clips(tmp_path, actor, CORE6, CORE6.labels) for actor in (1, 2))
    path = tmp_path / "call.wav"
    gap_s = (0.2, 0.4)
    placed = assemble_call((first, second), path, gap_s=gap_s, sample_rate=RATE, encoding="pcm16",
                           rng=np.random.default_rng(0))

    assert [clip.channel for clip in placed] == [0, 1, 0, 1, 0], "alternating, then channel 0 alone"
    assert sorted(clip.clip.path for clip in placed) == sorted(clip.path for clip in first + second)
    assert all(clip.clip.actor == (1, 2)[clip.channel] for clip in placed)
    lengths = {clip.path: sf.info(clip.path).frames / RATE for clip in first + second}
    for clip in placed:
        assert clip.end_s - clip.start_s == pytest.approx(lengths[clip.clip.path])
    pauses = [later.start_s - earlier.end_s for earlier, later in zip(placed, placed[1:])]
    assert gap_s[0] - 1e-3 <= placed[0].start_s <= gap_s[1] and all(gap_s[0] - 1e-3 <= p <= gap_s[1] for p in pauses)

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE and audio.shape[1] == 2
    assert gap_s[0] - 1e-3 <= audio.shape[0] / RATE - placed[-1].end_s <= gap_s[1], "the call ends with a pause"
    for clip in placed:
        inside = audio[int(clip.start_s * RATE) + 10 : int(clip.end_s * RATE) - 10]
        assert np.abs(inside[:, clip.channel]).max() > 0.2, "the clip is where it was placed"
        assert np.abs(inside[:, 1 - clip.channel]).max() < 0.01, "the other channel holds line noise only"

    telephone_path = tmp_path / "call-8k.wav"
    placed_8k = assemble_call((first, second), telephone_path, gap_s=gap_s, sample_rate=8000, encoding="ulaw",
                              rng=np.random.default_rng(0))
    assert placed_8k == placed, "same seed, same call"
    info = sf.info(telephone_path)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "ULAW")
    assert info.frames == pytest.approx(audio.shape[0] / 2, abs=2)


def channel(regions: list[tuple[int, int]], windows: list[tuple[int, int]], turns: list[int],
            probabilities: list[list[float]]) -> ChannelScores:
    return ChannelScores(
        name="0", n_samples=10_000, regions=np.array(regions, dtype=np.int64).reshape(-1, 2),
        windows=np.array(windows, dtype=np.int64).reshape(-1, 2), turns=np.array(turns, dtype=np.int64),
        probabilities=np.array(probabilities, dtype=np.float32).reshape(len(windows), 2),
    )


def test_turns_go_to_the_clip_they_overlap_most_and_clips_take_their_mean() -> None:
    spans = np.array([[100, 400], [600, 900], [2000, 2300]], dtype=np.float64)
    scores = channel(
        regions=[(120, 380), (390, 650), (700, 1200), (1500, 1600)],
        windows=[(120, 380), (390, 650), (700, 1000), (850, 1150), (1500, 1600)],
        turns=[0, 1, 2, 2, 3],
        probabilities=[[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5], [0.0, 1.0]],
    )
    probabilities, covered = turn_predictions(scores, spans)
    # turn 1 overlaps clip 0 by 10 samples and clip 1 by 50: clip 1's; turn 3 lies on noise;
    # window (850, 1150) overlaps clip 1 only, window (1500, 1600) no clip
    np.testing.assert_allclose(probabilities[0], [0.9, 0.1])
    np.testing.assert_allclose(probabilities[1], [(0.2 + 0.3 + 0.5) / 3, (0.8 + 0.7 + 0.5) / 3], rtol=1e-6)
    assert covered.tolist() == [True, True, False]
    assert window_clips(scores, spans).tolist() == [0, 1, 1, 1, -1]


def test_matching_without_windows_or_clips() -> None:
    empty = channel(regions=[], windows=[], turns=[], probabilities=[])
    probabilities, covered = turn_predictions(empty, np.array([[0, 10]], dtype=np.float64))
    assert probabilities.shape == (1, 2) and covered.tolist() == [False]
    scores = channel(regions=[(0, 10)], windows=[(0, 10)], turns=[0], probabilities=[[0.4, 0.6]])
    assert window_clips(scores, np.zeros((0, 2))).tolist() == [-1]
    assert clip_spans([], RATE).shape == (0, 2)


def test_the_tally_keeps_which_placed_clips_the_turns_reached() -> None:
    labels = ["neutral", "sad"]
    placed = [PlacedClip(Clip(Path(f"clip{k}.wav"), labels[k % 2], 1), 0, start, start + 0.02)
              for k, start in enumerate((0.01, 0.05, 0.1))]
    # at 10 kHz the clips span samples 100-300, 500-700 and 1000-1200; no turn reaches the last
    scores = channel(regions=[(120, 280), (520, 680)], windows=[(120, 280), (520, 680)], turns=[0, 1],
                     probabilities=[[0.9, 0.1], [0.2, 0.8]])
    tally = CallTally()
    tally_call(tally, [scores], placed, 10_000, labels)
    assert tally.turn_clips == [Path("clip0.wav"), Path("clip1.wav")]
    assert tally.turn_truth == [0, 1] and tally.turn_predicted == [0, 1]
    assert tally.clips_placed == 3 and tally.clips_without_window == 1
