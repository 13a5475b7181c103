"""Features rows (a pandas DataFrame read from the Parquet table) → NumPy arrays for the models.

Array columns are stored flattened with their shape in ``<name>_shape`` (see
``docs/CONTRACTS.md``); this module restores ``[n, *shape]`` batches, the form every model's
``predict_proba`` takes, checks the table's feature config version, and holds
:class:`TrainingData`, the taxonomy-mapped rows with a model kind's inputs that the training
protocol (:mod:`training.protocol`) hands to each kind.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ser_udfs.encoders.inputs import check_sample_rate
from ser_udfs.errors import UserError
from ser_udfs.features.config import FeatureConfig
from training.stats_inputs import stats_vector
from training.speaker_norm import StatsNormalisation, speaker_standardise
from training.splits import holdout_split, speaker_keys

logger = logging.getLogger(__name__)

# Feature columns a batch can hold; ``stats``, ``egemaps`` and ``waveform`` are plain vectors without a shape column.
FEATURE_COLUMNS = ("log_mel", "mfcc", "zcr", "stats", "egemaps", "waveform")
#: The column (and model input) of preprocessed clips, which transformer models read.
WAVEFORM_INPUT = "waveform"


@dataclass
class TrainingData:
    """A taxonomy-mapped feature table ready for a model kind.

    Attributes
    ----------
    frame
        The taxonomy-mapped rows.
    labels
        Class names in index order.
    inputs
        The model kind's inputs, one per row: ``[n, d]`` stats, ``[n, rows, frames]`` CNN maps,
        ``[n, samples]`` waveforms or ``[n, layers, hidden]`` pooled embeddings.
    targets
        ``[n]`` int64 class indices into ``labels``.
    input_rows
        CNN only: rows per input map.
    stats
        CNN with a stats model: ``[n, d]`` stats, normalised as ``cnn.stats_normalisation`` says.
    """

    frame: pd.DataFrame
    labels: list[str]
    inputs: np.ndarray
    targets: np.ndarray
    input_rows: tuple[int, ...] = ()
    stats: np.ndarray | None = None

    @property
    def corpora(self) -> np.ndarray:
        """``[n]`` the corpus of each row (what balancing across corpora groups by)."""
        return self.frame["corpus"].astype(str).to_numpy()

    @property
    def is_original(self) -> np.ndarray:
        """``[n]`` bool: rows that are not augmented copies."""
        if "augmentation" not in self.frame:
            return np.ones(len(self.frame), dtype=bool)
        return self.frame["augmentation"].isna().to_numpy()

    def early_stopping_rows(
        self, rows: np.ndarray, *, method: str, fraction: float, seed: int, log_prefix: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split training ``rows`` into rows to fit and original clips of held-out speakers to early-stop on
        (and to fit the temperature on, :mod:`training.calibration`; logreg holds them out for that alone).

        Parameters
        ----------
        rows
            ``[n]`` indices into this data.
        method
            ``speaker`` (hold out whole speakers) or ``random``.
        fraction
            Share of speakers (or clips) held out.

        Returns
        -------
        (train, validation)
            Indices into this data.
        """
        inner = holdout_split(self.frame.iloc[rows], method, test_fraction=fraction, seed=seed)
        train, validation = rows[inner.train_index], rows[inner.test_index]
        validation = validation[self.is_original[validation]]
        logger.info("%strain on %d rows, hold out %d original clips of held-out %s", log_prefix, len(train),
                    len(validation), "speakers" if method == "speaker" else "clips")
        return train, validation

    def fit_rows(
        self, rows: np.ndarray, *, epochs: int | None, method: str, fraction: float, seed: int, log_prefix: str
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
        """The rows a torch model trains on, and the held-out clips it early-stops on (none when ``epochs`` is fixed).

        Returns
        -------
        (train, held_out, validation)
            ``train``: indices into this data; ``held_out``: indices of :meth:`early_stopping_rows`'
            held-out clips (which temperature scaling is then fitted on, :mod:`training.calibration`),
            ``validation``: their ``(inputs, targets)``; both ``None`` when ``epochs`` is given.
        """
        if epochs is not None:
            return rows, None, None
        train, held_out = self.early_stopping_rows(rows, method=method, fraction=fraction, seed=seed,
                                                   log_prefix=log_prefix)
        return train, held_out, (self.inputs[held_out], self.targets[held_out])


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
        remedy = "extract the features with --set egemaps.enabled=true" if name == "egemaps" else "re-extract the features"
        if name not in frame.columns:
            raise UserError(f"the features table has no {name!r} column, which the model needs: {remedy}")
        values = frame[name].to_numpy()
        if any(value is None or (np.isscalar(value) and pd.isna(value)) for value in values):
            raise UserError(f"some rows have no {name!r} values: {remedy}")
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


def table_feature_config(frame: pd.DataFrame, feature_config: FeatureConfig | Mapping[str, Any]) -> FeatureConfig:
    """The table's feature config, checked against its rows' ``feature_config_version``.

    Parameters
    ----------
    frame
        Features rows (with a ``feature_config_version`` column).
    feature_config
        The table's feature config, or the dict from its ``_manifest.json`` (``"feature_config"``).
    """
    config = feature_config if isinstance(feature_config, FeatureConfig) else FeatureConfig.from_dict(feature_config)
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


def standardisation_groups(frame: pd.DataFrame) -> np.ndarray:
    """The group of each row for per-speaker standardisation: its speaker, and how it was recorded.

    ``corpus/speaker`` for original clips; augmented copies get ``corpus/speaker|<effects>``
    (the effect names of their ``augmentation`` tag without parameters, e.g. ``noise+telephone``),
    so each speaker's copies made alike are standardised together, as call scoring standardises
    one channel (one speaker on one line) over its own windows, and never pooled with the clean
    clips. ``[n]`` strings.
    """
    keys = speaker_keys(frame)
    if "augmentation" not in frame:
        return keys
    conditions = [
        "" if tag is None or (isinstance(tag, float) and np.isnan(tag))
        else "|" + "+".join(re.findall(r"(?:^|\+)([a-z]+)", str(tag)))  # "gain+3.1db+noise_snr17" → gain+noise
        for tag in frame["augmentation"].tolist()
    ]
    return np.array([key + condition for key, condition in zip(keys, conditions)], dtype=object)


def stats_inputs(frame: pd.DataFrame, normalisation: StatsNormalisation, inputs: Sequence[str] = ("stats",)) -> np.ndarray:
    """The stats model's vectors ``[n, d]`` of ``frame``'s rows (``inputs`` side by side,
    :func:`training.stats_inputs.stats_vector`), standardised per speaker for ``"speaker"``
    (:func:`standardisation_groups`)."""
    stats = stats_vector(feature_batch(frame, list(inputs)), inputs)
    return speaker_standardise(stats, standardisation_groups(frame)) if normalisation == "speaker" else stats


def table_waveforms(frame: pd.DataFrame, table_config: FeatureConfig, extractor: Any) -> np.ndarray:
    """float32 ``[n, clip_samples]`` waveforms of features rows, checked against the encoder's rate."""
    if WAVEFORM_INPUT not in frame.columns or frame[WAVEFORM_INPUT].isna().any():
        raise UserError(
            "the features table has no waveforms (or not for every row), which transformer models need; "
            "re-run the extraction with --set output.keep_waveform=true"
        )
    check_sample_rate(extractor, table_config.audio.target_sample_rate_hz)
    return feature_batch(frame, [WAVEFORM_INPUT])[WAVEFORM_INPUT]


def waveform_input(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """``batch["waveform"]`` as float32 ``[n, samples]``; a user error when the batch has no waveforms."""
    if WAVEFORM_INPUT not in batch:
        raise UserError("the model needs the 'waveform' input (preprocessed clips), which the input does not have")
    return np.asarray(batch[WAVEFORM_INPUT], dtype=np.float32)
