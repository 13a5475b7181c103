"""Train/test splits that keep speakers (or clips) and their augmented copies on one side.

Speaker-independent is the default: rows are grouped by ``corpus + "/" + speaker`` and no group
appears on both sides; groups are assigned so that label proportions stay close to the whole
(scikit-learn's ``StratifiedGroupKFold``). A random split groups rows by ``path`` instead, so
augmented copies of a clip (same ``path``) still go where the clip goes; it is used only when
asked for, and every report names the split.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ser_udfs.errors import UserError

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
    """

    method: Literal["speaker", "random"] = "speaker"
    folds: int = 6
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ValueError("split.folds must be at least 1 (1 = one holdout split)")
        if not 0 < self.test_fraction < 1:
            raise ValueError("split.test_fraction must lie in (0, 1)")

    def describe(self) -> str:
        """One line for reports, e.g. ``speaker-independent 6-fold cross-validation``."""
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
        ``config.folds`` splits whose test sides partition the rows, or one holdout split.
    """
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
