"""Splits never put a speaker (or a clip with its augmented copies) on both sides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_udfs.errors import UserError
from training.splits import SplitConfig, holdout_split, make_splits, speaker_keys

LABELS = ["angry", "happy", "neutral", "sad"]


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """Clips of several corpora whose speaker ids collide across corpora, some augmented."""
    n_speakers = draw(st.integers(min_value=3, max_value=9))
    rows = []
    for speaker in range(n_speakers):
        corpus = draw(st.sampled_from(["ravdess", "crema-d"]))
        for clip in range(draw(st.integers(min_value=1, max_value=5))):
            path = f"file:/{corpus}/{speaker}/{clip}.wav"
            label = draw(st.sampled_from(LABELS))
            for copy in range(1 + draw(st.integers(min_value=0, max_value=2))):
                rows.append({
                    "path": path, "corpus": corpus, "speaker": str(speaker % 4), "label": label,
                    "augmentation": None if copy == 0 else f"noise_snr{copy}",
                })
    return pd.DataFrame(rows)


def _assert_sides_disjoint(frame: pd.DataFrame, train: np.ndarray, test: np.ndarray) -> None:
    keys = speaker_keys(frame)
    assert not set(keys[train]) & set(keys[test])
    assert not set(frame["path"].iloc[train]) & set(frame["path"].iloc[test])
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == len(frame)


@settings(max_examples=40, deadline=None)
@given(frame=frames(), folds=st.integers(min_value=2, max_value=3), seed=st.integers(0, 1000))
def test_speaker_folds_never_leak_speakers_and_partition_the_rows(frame: pd.DataFrame, folds: int, seed: int) -> None:
    n_groups = len(set(speaker_keys(frame)))
    if n_groups < folds:
        with pytest.raises(UserError, match="cannot split"):
            make_splits(frame, SplitConfig(folds=folds), seed=seed)
        return
    splits = make_splits(frame, SplitConfig(folds=folds), seed=seed)
    assert len(splits) == folds
    for split in splits:
        _assert_sides_disjoint(frame, split.train_index, split.test_index)
    assert sorted(np.concatenate([split.test_index for split in splits])) == list(range(len(frame)))


def test_too_few_speakers_say_what_works() -> None:
    one = pd.DataFrame({"label": ["angry", "sad"] * 4, "speaker": ["1"] * 8, "corpus": ["c"] * 8,
                        "path": [f"{i}.wav" for i in range(8)]})
    with pytest.raises(UserError, match="--split random") as refused:
        make_splits(one, SplitConfig(folds=1), seed=0)  # one holdout split: still needs two speakers
    assert "fewer folds" not in str(refused.value)
    two = one.assign(speaker=["1", "2"] * 4)
    with pytest.raises(UserError, match="pass --folds 2 or fewer"):
        make_splits(two, SplitConfig(folds=3), seed=0)
    assert len(make_splits(one, SplitConfig(folds=1, method="random"), seed=0)) == 1


@settings(max_examples=40, deadline=None)
@given(frame=frames(), seed=st.integers(0, 1000), fraction=st.sampled_from([0.2, 0.34, 0.5]))
def test_holdout_and_validation_splits_never_leak_speakers(frame: pd.DataFrame, seed: int, fraction: float) -> None:
    split = holdout_split(frame, "speaker", test_fraction=fraction, seed=seed)
    _assert_sides_disjoint(frame, split.train_index, split.test_index)
    assert len(split.test_index) > 0 and len(split.train_index) > 0


@settings(max_examples=30, deadline=None)
@given(frame=frames(), seed=st.integers(0, 1000))
def test_random_split_keeps_augmented_copies_with_their_clip(frame: pd.DataFrame, seed: int) -> None:
    splits = make_splits(frame, SplitConfig(method="random", folds=2), seed=seed)
    for split in splits:
        assert not set(frame["path"].iloc[split.train_index]) & set(frame["path"].iloc[split.test_index])


def test_ravdess_like_corpus_gets_four_actors_per_fold() -> None:
    frame = pd.DataFrame([
        {"path": f"a{actor}/{label}{clip}", "corpus": "ravdess", "speaker": f"{actor:02d}", "label": label}
        for actor in range(1, 25) for label in LABELS for clip in range(4)
    ])
    splits = make_splits(frame, SplitConfig(folds=6), seed=0)
    assert [len(set(frame["speaker"].iloc[split.test_index])) for split in splits] == [4] * 6


def test_same_speaker_id_in_two_corpora_is_two_speakers() -> None:
    frame = pd.DataFrame({"corpus": ["a", "b"], "speaker": ["1", "1"], "path": ["x", "y"], "label": ["sad", "sad"]})
    assert list(speaker_keys(frame)) == ["a/1", "b/1"]


def test_missing_speaker_is_refused_for_a_speaker_split_only() -> None:
    frame = pd.DataFrame({
        "corpus": ["c"] * 8, "speaker": [None] * 8, "path": [f"p{i}" for i in range(8)], "label": LABELS * 2,
    })
    with pytest.raises(UserError, match="no speaker"):
        make_splits(frame, SplitConfig(), seed=0)
    assert len(make_splits(frame, SplitConfig(method="random", folds=2), seed=0)) == 2


def test_split_description_names_the_split() -> None:
    assert SplitConfig().describe().startswith("speaker-independent")
    assert "6-fold" in SplitConfig().describe()
    assert "random" in SplitConfig(method="random", folds=1).describe()


def _actors_frame(corpora: dict[str, int]) -> pd.DataFrame:
    """Two clips per label for each speaker ``01``..``N`` of each corpus."""
    rows = [
        {"path": f"/{corpus}/{actor:02d}/{label}{take}.wav", "corpus": corpus, "speaker": f"{actor:02d}", "label": label}
        for corpus, n_actors in corpora.items() for actor in range(1, n_actors + 1)
        for label in LABELS for take in range(2)
    ]
    return pd.DataFrame(rows)


def test_shipped_emobox_folds_test_exactly_the_published_actors() -> None:
    frame = _actors_frame({"ravdess": 24})
    config = SplitConfig(assignment="ravdess_emobox")
    splits = make_splits(frame, config, seed=0)
    published = [{1, 11, 20, 21}, {4, 10, 12, 14}, {8, 9, 19, 23}, {3, 5, 7, 24}, {2, 15, 16, 18}, {6, 13, 17, 22}]
    assert config.folds == 6 and "ravdess_emobox.toml" in config.describe()
    assert [{int(key.split("/")[1]) for key in split.summary(frame)["test_speakers"]} for split in splits] == published
    assert sorted(np.concatenate([split.test_index for split in splits]).tolist()) == list(range(len(frame)))
    for split in splits:
        _assert_sides_disjoint(frame, split.train_index, split.test_index)
    # The seed draws nothing: the same folds whatever it is.
    assert [s.test_index.tolist() for s in make_splits(frame, config, seed=7)] == [s.test_index.tolist() for s in splits]


def test_speakers_the_assignment_does_not_name_are_trained_on_in_every_fold(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[[fold]]\nravdess = ["01"]\n[[fold]]\nravdess = ["02"]\nbanglaser = ["02"]\n')
    frame = _actors_frame({"ravdess": 3, "banglaser": 2})
    splits = make_splits(frame, SplitConfig(assignment=str(path), folds=2), seed=0)
    assert [split.summary(frame)["test_speakers"] for split in splits] == [["ravdess/01"], ["banglaser/02", "ravdess/02"]]
    keys = speaker_keys(frame)
    for split in splits:
        assert {"ravdess/03", "banglaser/01"} <= set(keys[split.train_index])
        _assert_sides_disjoint(frame, split.train_index, split.test_index)


@pytest.mark.parametrize(("text", "config", "message"), [
    ('[[fold]]\nravdess = ["01"]\n', {"folds": 3}, "has 1 folds"),
    ('[[fold]]\nravdess = ["01"]\n', {"method": "random"}, "needs split.method"),
    ('[[fold]]\nravdess = ["01"]\n[[fold]]\nravdess = ["01"]\n', {}, "is in folds 1 and 2"),
    ('[[fold]]\nravdess = [1, 11]\n', {}, "list of speaker strings"),
    ('title = "no folds"\n', {}, "no [[fold]] tables"),
    ('[[fold]]\nravdess = []\n', {}, "names no speakers"),
])
def test_bad_assignment_files_say_what_to_fix(tmp_path, text: str, config: dict, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises((UserError, ValueError), match=message.replace("[", r"\[")):
        SplitConfig(assignment=str(path), **config)


def test_assignment_whose_fold_has_no_rows_in_the_table_is_refused(tmp_path) -> None:
    with pytest.raises(UserError, match="none of whom is in the table"):
        make_splits(_actors_frame({"crema-d": 4}), SplitConfig(assignment="ravdess_emobox"), seed=0)
    with pytest.raises(UserError, match="neither a file nor one of the shipped splits"):
        SplitConfig(assignment=str(tmp_path / "nowhere.toml"))
