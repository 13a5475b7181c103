"""Train/test splits that keep speakers (or clips) and their augmented copies on one side.

Speaker-independent is the default: rows are grouped by ``corpus + "/" + speaker`` and no group
appears on both sides; groups are assigned so that label proportions stay close to the whole
(scikit-learn's ``StratifiedGroupKFold``). A random split groups rows by ``path`` instead, so
augmented copies of a clip (same ``path``) still go where the clip goes; it is used only when
asked for, and every report names the split.

A split can also be given by a file (``split.assignment``): each fold names its test speakers per
corpus, e.g. ``conf/splits/ravdess_emobox.toml`` holds EmoBox's six RAVDESS folds, so figures
can be set beside a published table. Speakers the file does not name are trained on in every fold
and never tested (a corpus added for training only).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ser_udfs.defaults import conf_dir
from ser_udfs.errors import UserError
from ser_udfs.settings import load_toml

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """How to split (``[split]`` in ``conf/train_*.toml``).

    Attributes
    ----------
    method
        ``speaker`` (no speaker on both sides) or ``random`` (clips at random).
    folds
        Number of cross-validation folds; ``1`` means one holdout split of ``test_fraction``.
    test_fraction
        Share of groups held out for testing when ``folds = 1``.
    assignment
        A TOML file of predefined folds (see :func:`load_assignment`), or the name of one in
        ``conf/splits/`` (``ravdess_emobox``); it sets ``folds`` to its number of folds (a
        different ``folds`` given with it is refused). ``""``: folds drawn by ``StratifiedGroupKFold``.
    """

    method: Literal["speaker", "random"] = "speaker"
    folds: int = 6
    test_fraction: float = 0.2
    assignment: str = ""

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ValueError("split.folds must be at least 1 (1 = one holdout split)")
        if not 0 < self.test_fraction < 1:
            raise ValueError("split.test_fraction must lie in (0, 1)")
        if self.assignment:
            if self.method != "speaker":
                raise ValueError("split.assignment names test speakers, so it needs split.method = \"speaker\"")
            n_folds = len(load_assignment(self.assignment))
            if self.folds not in (n_folds, SplitConfig.__dataclass_fields__["folds"].default):
                raise ValueError(
                    f"split.folds = {self.folds}, but {self.assignment} has {n_folds} folds: leave split.folds out "
                    "(the file sets the folds)"
                )
            object.__setattr__(self, "folds", n_folds)

    def describe(self) -> str:
        """One line for reports, e.g. ``speaker-independent 6-fold cross-validation``."""
        if self.assignment:
            return (f"speaker-independent (grouped by corpus/speaker), the predefined folds of "
                    f"{assignment_path(self.assignment).name}")
        grouping = (
            "speaker-independent (grouped by corpus/speaker)"
            if self.method == "speaker"
            else "random by clip (speakers may appear on both sides)"
        )
        if self.folds > 1:
            return f"{grouping}, stratified {self.folds}-fold cross-validation"
        return f"{grouping}, stratified holdout of {self.test_fraction:.0%} for testing"


@dataclass(frozen=True)
class Split:
    """One train/test partition of a frame's rows.

    Attributes
    ----------
    name
        ``fold 2/6`` or ``holdout``.
    train_index, test_index
        Row positions (``iloc``) ``[n_train]`` and ``[n_test]``, disjoint, sorted.
    """

    name: str
    train_index: np.ndarray
    test_index: np.ndarray

    def summary(self, frame: pd.DataFrame) -> dict[str, Any]:
        """Row and group counts of both sides, for reports."""
        keys = speaker_keys(frame, allow_missing=True)
        return {
            "name": self.name,
            "train_rows": int(len(self.train_index)),
            "test_rows": int(len(self.test_index)),
            "test_speakers": sorted(set(keys[self.test_index])),
        }


def speaker_keys(frame: pd.DataFrame, *, allow_missing: bool = False) -> np.ndarray:
    """``corpus + "/" + speaker`` per row, ``[n]`` strings.

    Raises
    ------
    UserError
        When a row has no speaker and ``allow_missing`` is false: a speaker-independent
        split cannot place it honestly.
    """
    speakers = frame["speaker"].astype(object)
    missing = speakers.isna().to_numpy()
    if missing.any() and not allow_missing:
        raise UserError(
            f"{int(missing.sum())} of {len(frame)} rows have no speaker, so a speaker-independent "
            "split cannot place them: give speakers in the manifest, or ask for split.method=random"
        )
    corpora = frame["corpus"].astype(str).to_numpy()
    return np.array(
        [f"{corpus}/{'?' if miss else speaker}" for corpus, speaker, miss in zip(corpora, speakers, missing)],
        dtype=object,
    )


def group_keys(frame: pd.DataFrame, method: Literal["speaker", "random"]) -> np.ndarray:
    """The unit a split never divides: the speaker, or for a random split the clip (``path``)."""
    if method == "speaker":
        return speaker_keys(frame)
    return frame["path"].astype(str).to_numpy()


def make_splits(frame: pd.DataFrame, config: SplitConfig, *, seed: int) -> list[Split]:
    """The cross-validation folds (or the one holdout split) of ``frame``.

    Parameters
    ----------
    frame
        Rows with ``label``, ``corpus``, ``speaker`` and ``path`` columns.
    config
        Method, number of folds, test fraction.
    seed
        Seeds the assignment of groups to folds.

    Returns
    -------
    list of Split
        ``config.folds`` splits whose test sides partition the rows, or one holdout split; with
        ``config.assignment``, the file's folds, whose test sides partition the rows of the
        speakers it names.
    """
    if config.assignment:
        return assigned_splits(frame, config)
    if config.folds == 1:
        return [holdout_split(frame, config.method, test_fraction=config.test_fraction, seed=seed)]
    groups = group_keys(frame, config.method)
    folds = _grouped_folds(frame["label"].astype(str).to_numpy(), groups, config.folds, seed, config.method)
    all_rows = np.arange(len(frame))
    splits = [
        Split(name=f"fold {number}/{config.folds}", train_index=np.setdiff1d(all_rows, test), test_index=np.sort(test))
        for number, test in enumerate(folds, start=1)
    ]
    logger.info(
        "%s: test rows per fold %s", config.describe(), [len(split.test_index) for split in splits]
    )
    return splits


def holdout_split(
    frame: pd.DataFrame, method: Literal["speaker", "random"], *, test_fraction: float, seed: int
) -> Split:
    """One stratified, grouped split holding out about ``test_fraction`` of the groups.

    Also used to carve a validation set of held-out speakers out of a training side.
    """
    groups = group_keys(frame, method)
    n_parts = max(2, int(round(1 / test_fraction)))
    n_parts = min(n_parts, len(set(groups)))
    test = _grouped_folds(frame["label"].astype(str).to_numpy(), groups, n_parts, seed, method)[0]
    return Split(name="holdout", train_index=np.setdiff1d(np.arange(len(frame)), test), test_index=np.sort(test))


def _grouped_folds(
    labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, method: str
) -> list[np.ndarray]:
    n_groups = len(set(groups))
    unit = "speakers" if method == "speaker" else "clips"
    if n_groups < 2:
        remedy = (
            "speaker-independent training needs at least two speakers (one to learn from, one to test on): add "
            "speakers, or pass --split random to hold out clips instead (the figures then say nothing about new "
            "speakers)" if method == "speaker" else "add clips"
        )
        raise UserError(f"cannot split {n_groups} {unit} into a training and a test part: {remedy}")
    if n_groups < n_folds:
        raise UserError(
            f"cannot split {n_groups} {unit} into {n_folds} folds: pass --folds {n_groups} or fewer "
            f"(--folds 1: one holdout split), or add {unit}"
        )
    groups_per_label = pd.Series(groups).groupby(labels).nunique()
    if (sparse := groups_per_label[groups_per_label < n_folds]).size:
        logger.warning(
            "labels %s occur for fewer %s than there are parts (%d); some test parts will lack them",
            dict(sparse), unit, n_folds,
        )
    # With too few rows of every label to stratify, one dummy class gives grouped, unstratified folds.
    strata = labels if pd.Series(labels).value_counts().max() >= n_folds else np.zeros(len(labels))
    # Imported here: scikit-learn costs a scoring worker ~60 MB, and the model files import this
    # module for SplitConfig only.
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # scikit-learn warns per row count; the warning above counts groups, which is what matters.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(labels)), strata, groups)]


def assignment_path(spec: str) -> Path:
    """The file of ``split.assignment``: a path, or a name in ``conf/splits/`` (``ravdess_emobox``).

    Raises
    ------
    UserError
        When neither exists.
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = conf_dir() / "splits"
    for candidate in (shipped / path.name, shipped / f"{path.name}.toml"):
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in shipped.glob("*.toml"))
    raise UserError(
        f"split.assignment {spec!r} is neither a file nor one of the shipped splits {names}: give the path "
        "of a TOML file of [[fold]] tables (see conf/splits/ravdess_emobox.toml)"
    )


def load_assignment(spec: str) -> list[set[str]]:
    """The test speakers of each fold of an assignment file, as ``corpus/speaker`` keys.

    The file holds one ``[[fold]]`` table per fold mapping a corpus to its test speakers::

        [[fold]]
        ravdess = ["01", "11", "20", "21"]

    Speakers are strings as the features table spells them (RAVDESS actors ``"01"``–``"24"``).

    Raises
    ------
    UserError
        When the file has no folds, a fold names no speaker, or a speaker is in two folds.
    """
    path = assignment_path(spec)
    folds = load_toml(path).get("fold")
    if not isinstance(folds, list) or not folds:
        raise UserError(f"{path} has no [[fold]] tables: give one per fold, e.g. [[fold]] ravdess = [\"01\", \"11\"]")
    keys: list[set[str]] = []
    seen: dict[str, int] = {}
    for number, fold in enumerate(folds, start=1):
        fold_keys = set()
        for corpus, speakers in fold.items():
            if not isinstance(speakers, list) or not all(isinstance(s, str) for s in speakers):
                raise UserError(
                    f"{path}, fold {number}: {corpus} must be a list of speaker strings as the table spells "
                    f"them (e.g. [\"01\", \"11\"]), not {speakers!r}"
                )
            for speaker in speakers:
                key = f"{corpus}/{speaker}"
                if key in seen:
                    raise UserError(f"{path}: speaker {key} is in folds {seen[key]} and {number}; give each speaker one fold")
                seen[key] = number
                fold_keys.add(key)
        if not fold_keys:
            raise UserError(f"{path}, fold {number} names no speakers: give each fold its test speakers")
        keys.append(fold_keys)
    return keys


def assigned_splits(frame: pd.DataFrame, config: SplitConfig) -> list[Split]:
    """The folds of ``config.assignment`` over ``frame``'s rows.

    Raises
    ------
    UserError
        When a fold's test speakers have no rows in ``frame``.
    """
    folds = load_assignment(config.assignment)
    keys = speaker_keys(frame)
    present = set(keys)
    all_rows = np.arange(len(frame))
    splits = []
    for number, fold_keys in enumerate(folds, start=1):
        if not fold_keys & present:
            raise UserError(
                f"fold {number} of {config.assignment} tests speakers {sorted(fold_keys)}, none of whom is in the "
                f"table (its speakers look like {sorted(present)[:3]}): extract those speakers, or use a file "
                "that matches the table"
            )
        if missing := fold_keys - present:
            logger.warning("fold %d: speakers %s of %s are not in the table", number, sorted(missing), config.assignment)
        test = np.flatnonzero(np.isin(keys, list(fold_keys)))
        splits.append(Split(name=f"fold {number}/{len(folds)}", train_index=np.setdiff1d(all_rows, test), test_index=test))
    named = set().union(*folds)
    if unnamed := sorted(present - named):
        logger.warning(
            "%d speakers are not named by %s (%s...): they are trained on in every fold and never tested",
            len(unnamed), config.assignment, ", ".join(unnamed[:5]),
        )
    logger.info("%s: test rows per fold %s", config.describe(), [len(split.test_index) for split in splits])
    return splits
