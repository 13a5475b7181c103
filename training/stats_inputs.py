"""The fixed-length vectors a stats model reads, and the one place they are joined.

A logistic regression (``logreg.inputs``) or the stats model fused with a CNN
(``cnn.stats_inputs``) reads one vector per clip: the ``stats`` vector (means and standard
deviations of MFCC, log-mel and ZCR rows), the 88 eGeMAPS functionals (``egemaps``, a column of
tables extracted with ``--set egemaps.enabled=true``), or both side by side, in the order given.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ser_udfs.errors import UserError

#: The feature columns a stats model can read.
STATS_INPUTS = ("stats", "egemaps")


def check_stats_inputs(inputs: Sequence[str], *, setting: str) -> None:
    """Raise ``ValueError`` naming ``setting`` unless ``inputs`` is a non-empty list of :data:`STATS_INPUTS` without repeats."""
    if not inputs or set(inputs) - set(STATS_INPUTS) or len(set(inputs)) != len(inputs):
        raise ValueError(f"{setting} must list one or more of {list(STATS_INPUTS)} once each, got {list(inputs)}")


def stats_vector(batch: Mapping[str, np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    """float32 ``[n, d]``: the ``inputs`` of ``batch`` (each ``[n, d_i]``) side by side.

    Raises
    ------
    UserError
        When ``batch`` lacks one of them (a table extracted without eGeMAPS, for ``egemaps``).
    """
    missing = [name for name in inputs if name not in batch]
    if missing:
        remedy = " (extract the features with --set egemaps.enabled=true)" if "egemaps" in missing else ""
        raise UserError(f"the model needs the feature(s) {missing}, which the input does not have{remedy}")
    parts = [np.asarray(batch[name], dtype=np.float32) for name in inputs]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
