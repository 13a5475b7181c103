"""Features rows (a pandas DataFrame read from the Parquet table) → NumPy arrays.

Array columns are stored flattened with their shape in ``<name>_shape`` (see
``docs/CONTRACTS.md``); this module restores ``[n, *shape]`` batches, the form every model's
``predict_proba`` takes, and checks the table's feature config version.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ser_udfs.errors import UserError
from ser_udfs.feature_config import FeatureConfig

# Feature columns a batch can hold; ``stats`` and ``waveform`` are plain vectors without a shape column.
FEATURE_COLUMNS = ("log_mel", "mfcc", "zcr", "stats", "waveform")


def feature_batch(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Stack the named feature columns of ``frame`` into arrays.

    Parameters
    ----------
    frame
        Features rows; list-valued columns as pandas gives them from Parquet.
    names
        Columns to stack, e.g. ``("log_mel", "mfcc")`` or ``("stats",)``.

    Returns
    -------
    dict
        ``{"log_mel": [n, n_mels, frames], "mfcc": [n, c, frames], "zcr": [n, 1, frames],
        "stats": [n, d]}`` (only the names asked for), float32.
    """
    batch = {}
    for name in names:
        if name not in FEATURE_COLUMNS:
            raise UserError(f"unknown feature {name!r}; features are {list(FEATURE_COLUMNS)}")
        if name not in frame.columns:
            raise UserError(f"the features table has no {name!r} column, which the model needs")
        values = frame[name].to_numpy()
        if any(value is None or (np.isscalar(value) and pd.isna(value)) for value in values):
            raise UserError(f"some rows have no {name!r} values; re-extract the features")
        shape = _common_shape(frame, name, values)
        flat = [np.asarray(value, dtype=np.float32) for value in values]
        expected = int(np.prod(shape))
        if any(array.size != expected for array in flat):
            raise UserError(f"some {name!r} values do not hold {expected} numbers for shape {list(shape)}")
        stacked = np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32)
        batch[name] = stacked.reshape((len(flat), *shape))
    return batch


def _common_shape(frame: pd.DataFrame, name: str, values: np.ndarray) -> tuple[int, ...]:
    shape_column = f"{name}_shape"
    if shape_column in frame.columns:
        shapes = {tuple(int(v) for v in shape) for shape in frame[shape_column]}
    else:
        shapes = {(len(value),) for value in values}
    if len(shapes) > 1:
        raise UserError(
            f"rows have different {name!r} shapes {sorted(shapes)[:4]}; "
            "a table must come from one feature config with a fixed clip duration"
        )
    if not shapes:
        raise UserError(f"no rows to read {name!r} from")
    return shapes.pop()


def label_indices(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Class index ``[n]`` (int64) of each row's ``label`` in ``labels``."""
    lookup = {label: index for index, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(lookup))
    if unknown:
        raise UserError(f"labels {unknown} are not among the model's labels {list(labels)}")
    return frame["label"].map(lookup).to_numpy(dtype=np.int64)


def table_feature_config(frame: pd.DataFrame, feature_config: Mapping[str, Any]) -> FeatureConfig:
    """The table's feature config, checked against its rows' ``feature_config_version``.

    Parameters
    ----------
    frame
        Features rows (with a ``feature_config_version`` column).
    feature_config
        The dict from the table's ``_manifest.json`` (``"feature_config"``).
    """
    config = FeatureConfig.from_dict(feature_config)
    if "feature_config_version" in frame.columns:
        versions = sorted(set(frame["feature_config_version"].astype(str)))
        if len(versions) > 1:
            raise UserError(
                f"the features table mixes feature configs {versions}; train on rows of one config"
            )
        if versions and versions[0] != config.version():
            raise UserError(
                f"the table's rows have feature config {versions[0]} but its manifest describes "
                f"{config.version()}; re-extract the features or use the matching manifest"
            )
    return config
