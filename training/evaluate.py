"""Apply a bundle to a labelled features table and report: what ``jobs/evaluate.py`` calls."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ser_udfs.calls.tables import probability_columns
from ser_udfs.errors import UserError
from ser_udfs.features.config import FeatureConfig
from training.bundle.load import Bundle
from training.data import feature_batch, label_indices, standardisation_groups, table_feature_config
from training.metrics import classification_metrics, format_headline, grouped_metrics
from training.plots import plot_confusion_matrix
from training.splits import speaker_keys
from training.taxonomy import TaxonomyReport, apply_taxonomy

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_PLOT = "confusion_matrix.png"
PREDICT_BATCH_ROWS = 256


def predict_frame(bundle: Bundle, frame: pd.DataFrame, *, batch_rows: int = PREDICT_BATCH_ROWS) -> np.ndarray:
    """Class probabilities ``[n, len(bundle.labels)]`` for features rows, in batches of ``batch_rows``.

    A bundle that standardises stats per speaker gets one batch per speaker (corpus and speaker
    columns; augmented copies per speaker and effects, :func:`training.data.standardisation_groups`),
    holding all of that group's rows. Each row's corpus goes with it (a logistic regression with
    weights of each training corpus's own picks them by it).
    """
    probabilities = np.zeros((len(frame), len(bundle.labels)), dtype=np.float32)
    if bundle.needs_speaker_groups:
        groups = standardisation_groups(frame)
        batches = [np.flatnonzero(groups == key) for key in pd.unique(groups)]
    else:
        groups = None
        batches = [np.arange(start, min(start + batch_rows, len(frame))) for start in range(0, len(frame), batch_rows)]
    corpora = frame["corpus"].astype(str).to_numpy() if "corpus" in frame else None
    for rows in batches:
        batch = feature_batch(frame.iloc[rows], bundle.inputs)
        probabilities[rows] = bundle.predict_proba(batch, None if groups is None else groups[rows],
                                                   None if corpora is None else corpora[rows])
    return probabilities


def evaluate_frame(
    frame: pd.DataFrame,
    bundle: Bundle,
    output_dir: str | Path,
    *,
    feature_config: FeatureConfig | Mapping[str, Any],
) -> dict[str, Any]:
    """Score labelled features rows with a bundle and write metrics, plot and predictions.

    Labels are mapped onto the bundle's taxonomy; rows it does not cover are dropped and
    counted. Headline metrics count original clips; augmented copies get their own entry.
    Speakers the bundle was trained on are counted in ``speakers_seen_in_training``: figures
    on those speakers are not speaker-independent.

    Parameters
    ----------
    frame
        Features rows with ``label`` (e.g. ``pd.read_parquet(table)``).
    bundle
        A loaded bundle (:func:`training.bundle.load.load_bundle`).
    output_dir
        Receives ``evaluation.json``, ``confusion_matrix.png`` and ``predictions.parquet``.
    feature_config
        The table's feature config (or the dict of its ``_manifest.json``); must match the bundle's.

    Returns
    -------
    dict
        The content of ``evaluation.json``.
    """
    bundle.check_feature_config(table_feature_config(frame, feature_config), source="the features table")
    mapped, report, untrained = _rows_with_bundle_labels(frame, bundle)
    probabilities = predict_frame(bundle, mapped)
    predicted = probabilities.argmax(axis=1)
    truth = label_indices(mapped, bundle.labels)
    original = mapped["augmentation"].isna().to_numpy() if "augmentation" in mapped else np.ones(len(mapped), bool)
    speakers = speaker_keys(mapped, allow_missing=True)
    trained_speakers = set(bundle.config.get("training", {}).get("data", {}).get("speakers", []))
    seen = sorted(set(speakers) & trained_speakers)
    headline_rows = original if original.any() else np.ones(len(mapped), bool)
    evaluation: dict[str, Any] = {
        "bundle": str(bundle.path),
        "model": bundle.model_kind,
        "taxonomy": bundle.taxonomy.name,
        "labels": list(bundle.labels),
        "rows": int(len(mapped)),
        "dropped_by_taxonomy": report.dropped,
        "dropped_labels_without_model_class": {str(k): int(v) for k, v in untrained.items()},
        "speakers_seen_in_training": seen,
        "metrics": classification_metrics(truth[headline_rows], predicted[headline_rows], bundle.labels),
        "per_corpus": grouped_metrics(
            truth[headline_rows], predicted[headline_rows], mapped["corpus"].to_numpy()[headline_rows], bundle.labels
        ),
    }
    if not original.all():
        evaluation["augmented"] = classification_metrics(truth[~original], predicted[~original], bundle.labels)
    evaluation["speakers"] = len(set(np.asarray(speakers)[headline_rows]))
    evaluation["matrix_title"] = matrix_title(evaluation, bundle)
    if seen:
        logger.warning(
            "%d evaluated speakers were in the bundle's training data: their figures are not speaker-independent",
            len(seen),
        )
    _write_report(Path(output_dir), evaluation, bundle, mapped, probabilities)
    logger.info("evaluation of %s: %s", bundle.path, format_headline(evaluation["metrics"]))
    return evaluation


def matrix_title(evaluation: dict[str, Any], bundle: Bundle) -> str:
    """The confusion matrix's title: what its cells hold (the original clips, augmented copies
    apart), the headline figures, and whether the evaluated speakers were in the training data."""
    metrics, speakers = evaluation["metrics"], evaluation["speakers"]
    what = f"{bundle.model_kind} ({bundle.path.name}): {metrics['n']} clips of {speakers} speakers"
    if "augmented" in evaluation:
        what += f"; their {evaluation['augmented']['n']} augmented copies are scored apart, not in these cells"
    seen = len(evaluation["speakers_seen_in_training"])
    trust = (f"{seen} of these {speakers} speakers were in the training data: not speaker-independent" if seen
             else "none of these speakers was in the training data")
    return "\n".join([what, format_headline(metrics), trust])


def _rows_with_bundle_labels(frame: pd.DataFrame, bundle: Bundle) -> tuple[pd.DataFrame, TaxonomyReport, dict[str, int]]:
    """Rows mapped onto the bundle's taxonomy whose label the bundle predicts, the taxonomy report,
    and how many mapped rows carry each label the bundle has no class for."""
    mapped, report = apply_taxonomy(frame, bundle.taxonomy)
    covered = mapped["label"].isin(bundle.labels).to_numpy()
    untrained = mapped.loc[~covered, "label"].value_counts().to_dict()
    mapped = mapped.loc[covered].reset_index(drop=True)
    if mapped.empty:
        raise UserError(
            f"no rows of the table carry one of the bundle's labels {list(bundle.labels)} "
            f"(taxonomy {bundle.taxonomy.name}); nothing to evaluate"
        )
    return mapped, report, untrained


def _write_report(output: Path, evaluation: dict[str, Any], bundle: Bundle, mapped: pd.DataFrame,
                  probabilities: np.ndarray) -> None:
    """``evaluation.json``, the confusion matrix and ``predictions.parquet`` (``probabilities`` ``[n, k]``)."""
    output.mkdir(parents=True, exist_ok=True)
    matrix = evaluation["metrics"]["confusion_matrix"]
    plot_confusion_matrix(
        np.array(matrix["matrix"]), matrix["labels"], output / CONFUSION_PLOT,
        title=evaluation["matrix_title"],
    )
    _predictions_table(mapped, probabilities, bundle.labels).to_parquet(output / PREDICTIONS_FILE, index=False)
    (output / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n")


def _predictions_table(frame: pd.DataFrame, probabilities: np.ndarray, labels: tuple[str, ...]) -> pd.DataFrame:
    columns = [name for name in ("clip_id", "path", "corpus", "speaker", "augmentation", "label") if name in frame]
    table = frame[columns].copy()
    table["predicted"] = [labels[index] for index in probabilities.argmax(axis=1)]
    for index, column in enumerate(probability_columns(labels)):
        table[column] = probabilities[:, index].astype(np.float64)  # double, as in the scoring tables
    return table
