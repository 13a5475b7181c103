"""Train a model from features rows and measure it on held-out speakers: what ``jobs/train.py`` calls.

:func:`train_from_frame` maps labels onto the taxonomy, splits (speaker-independent k-fold by
default), fits and tests one model per fold, then fits the bundle's model:

- k-fold (``split.folds >= 2``): metrics are the folds' test figures (per fold, mean ± std, and
  pooled over folds); the bundle's model is refit on all rows afterwards (the CNN for the
  median of the folds' best epoch counts, since no speakers are left for early stopping; an
  ensemble's members all count, and each member is refit).
- holdout (``split.folds = 1``): the bundle's model is the one tested.

Test figures count original clips only: augmented copies of a test speaker's clips stay on the
test side (they are never trained on) but are not scored, so the figures describe real clips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd

from ser_udfs.errors import UserError
from ser_udfs.feature_config import FeatureConfig
from ser_udfs.settings import to_dict
from training.bundle import save_bundle
from training.cnn import (
    CnnArchitecture, CnnConfig, CnnEnsemble, CnnModel, TrainingHistory, build_model, member_seed, model_input, train_model,
)
from training.cnn import predict_proba as cnn_predict_proba
from training.cnn_distributed import DistributedRunner, train_distributed
from training.dataset import feature_batch, label_indices, table_feature_config
from training.fusion import FusedModel
from training.logreg import LogregConfig, LogregModel, fit_logreg
from training.metrics import classification_metrics, format_headline, grouped_metrics, summarise_folds
from training.plots import plot_confusion_matrix, plot_training_curves
from training.speaker_norm import StatsNormalisation, speaker_standardise
from training.splits import Split, SplitConfig, holdout_split, make_splits, speaker_keys
from training.taxonomy import Taxonomy, TaxonomyReport, apply_taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

CONFUSION_PLOT = "confusion_matrix.png"
CURVES_PLOT = "training_curves.png"
#: What :func:`fit_model` returns.
TrainedModel = LogregModel | CnnModel | FusedModel


@dataclass(frozen=True)
class TrainConfig:
    """Everything the train job decides (``conf/train_logreg.toml``, ``conf/train_cnn.toml``).

    Attributes
    ----------
    model
        ``logreg`` or ``cnn``.
    taxonomy
        A name from ``conf/taxonomies.toml`` or the path of the user's TOML taxonomy.
    seed
        Seeds splits and models.
    """

    model: Literal["logreg", "cnn"] = "logreg"
    taxonomy: str = "core6"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    logreg: LogregConfig = field(default_factory=LogregConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)

    def feature_inputs(self) -> list[str]:
        """The features-table inputs the model reads (``stats``, or the CNN's maps [+ ``stats``])."""
        if self.model == "logreg":
            return ["stats"]
        return [*self.cnn.inputs, *(["stats"] if self.cnn.stats_fusion_weight > 0 else [])]

    def model_settings(self) -> dict[str, Any]:
        """The hyper-parameters of the chosen model kind, as a dict."""
        return to_dict(self.cnn if self.model == "cnn" else self.logreg)

    def stats_model_config(self) -> LogregConfig:
        """The logistic regression on stats: the logreg model, or the stats model fused with the CNN."""
        if self.model == "logreg":
            return self.logreg
        return LogregConfig(regularisation_c=self.cnn.stats_regularisation_c, class_balanced=self.cnn.class_balanced,
                            normalisation=self.cnn.stats_normalisation)


@dataclass
class TrainingData:
    """A taxonomy-mapped feature table ready for a model (shared by the CNN, logreg and HF trainers)."""

    frame: pd.DataFrame  # taxonomy-mapped rows
    labels: list[str]
    inputs: np.ndarray  # [n, d] stats or [n, rows, frames] CNN input
    targets: np.ndarray  # [n]
    input_rows: tuple[int, ...]  # CNN only: rows per input map
    stats: np.ndarray | None = None  # CNN with a stats model: [n, d] stats, normalised as cnn.stats_normalisation says

    @property
    def is_original(self) -> np.ndarray:
        """``[n]`` bool: rows that are not augmented copies."""
        if "augmentation" not in self.frame:
            return np.ones(len(self.frame), dtype=bool)
        return self.frame["augmentation"].isna().to_numpy()


def train_from_frame(
    frame: pd.DataFrame,
    config: TrainConfig,
    *,
    feature_config: Mapping[str, Any],
    output_dir: str | Path,
    taxonomy: Taxonomy | None = None,
    distributed_runner: DistributedRunner | None = None,
) -> dict[str, Any]:
    """Fit, test and save a model bundle from features rows.

    Parameters
    ----------
    frame
        Features rows (see ``docs/CONTRACTS.md``), e.g. ``pd.read_parquet(table)``; needs
        ``label``, ``corpus``, ``speaker``, ``path``, ``augmentation``,
        ``feature_config_version`` and the model's feature columns.
    config
        Model kind, taxonomy, seed, split and hyper-parameters.
    feature_config
        The table's feature config dict (``"feature_config"`` in its ``_manifest.json``).
    output_dir
        The bundle directory to write.
    taxonomy
        Overrides ``config.taxonomy`` (already resolved by the caller).
    distributed_runner
        For the CNN: a DDP launcher such as ``TorchDistributor(...).run``; ``None`` trains in
        this process.

    Returns
    -------
    dict
        ``{"bundle_dir", "model", "taxonomy", "labels", "split", "metrics"}`` where
        ``metrics`` holds the headline figures (mean/std/values for k-fold).
    """
    table_config = table_feature_config(frame, feature_config)
    taxonomy = taxonomy or load_taxonomy(config.taxonomy)
    if config.model == "cnn" and config.cnn.torch_threads > 0:
        import torch

        torch.set_num_threads(config.cnn.torch_threads)
    data, report = prepare_training_data(frame, config, taxonomy)
    splits = make_splits(data.frame, config.split, seed=config.seed)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)

    fold_results, histories, fold_models = [], [], []
    for number, split in enumerate(splits):
        model, member_histories = fit_model(
            data, split.train_index, config, seed=config.seed + number, log_prefix=f"{split.name}: ",
            distributed_runner=distributed_runner,
        )
        fold_results.append(evaluate_split(model, data, split))
        fold_models.append(model)
        histories += [(" ".join(filter(None, (split.name, member))), history) for member, history in member_histories]
        logger.info("%s: %s", split.name, format_headline(fold_results[-1]["metrics"]))

    metrics = metrics_report(data, config, taxonomy, splits, fold_results)
    if len(splits) > 1:
        epochs = int(round(float(np.median([h.best_epoch for _, h in histories])))) if histories else None
        final_model, final_histories = fit_model(
            data, np.arange(len(data.frame)), config, seed=config.seed + len(splits), log_prefix="final fit: ", epochs=epochs,
            distributed_runner=distributed_runner,
        )
        histories += [(" ".join(filter(None, ("final", member))), history) for member, history in final_histories]
        final_note = f"refit on all {len(data.frame)} rows after cross-validation" + (
            f" for {epochs} epochs (median best epoch over folds)" if epochs else ""
        )
    else:
        final_model, final_note = fold_models[0], "the model tested on the holdout split"
    metrics["final_model"] = final_note

    pooled = metrics["pooled"]["confusion_matrix"]
    plot_confusion_matrix(
        np.array(pooled["matrix"]), pooled["labels"], output / CONFUSION_PLOT,
        title=f"{config.model}, {taxonomy.name}\n{config.split.describe()}\n{format_headline(metrics['summary'])}",
    )
    if histories:
        plot_training_curves(histories, output / CURVES_PLOT)
    training = {
        "data": data_summary(data, report),
        "split": {**to_dict(config.split), "description": config.split.describe(), "seed": config.seed},
        "seed": config.seed,
        "model_settings": config.model_settings(),
        "histories": {name: history.to_dict() for name, history in histories},
        "final_model": final_note,
    }
    save_bundle(
        output, model=final_model, taxonomy=taxonomy, labels=data.labels, feature_config=table_config,
        training=training, metrics=metrics, stats_normalisation=config.stats_model_config().normalisation,
    )
    logger.info("%s on %s, %s: %s", config.model, taxonomy.name, config.split.describe(), format_headline(metrics["summary"]))
    return {
        "bundle_dir": str(output),
        "model": config.model,
        "taxonomy": taxonomy.name,
        "labels": data.labels,
        "split": config.split.describe(),
        "metrics": {name: metrics["summary"][name] for name in ("accuracy", "ua", "macro_f1")},
    }


def prepare_training_data(frame: pd.DataFrame, config: TrainConfig, taxonomy: Taxonomy) -> tuple[TrainingData, TaxonomyReport]:
    """Map ``frame`` onto ``taxonomy`` and build the inputs of ``config.model``.

    Returns
    -------
    data
        The mapped rows with inputs ``[n, d]`` (logreg stats) or ``[n, rows, frames]`` (CNN).
    report
        Rows kept and dropped per label.
    """
    mapped, report = apply_taxonomy(frame, taxonomy)
    labels = [label for label in taxonomy.labels if report.kept[label] > 0]
    if report.missing_labels:
        logger.warning("taxonomy %s: no rows for %s; the model will not predict them", taxonomy.name, report.missing_labels)
    if len(labels) < 2:
        raise UserError(
            f"after mapping onto taxonomy {taxonomy.name!r} only {labels} have rows; "
            "a model needs at least two classes: check the labels of the table or pick another taxonomy"
        )
    stats = None
    if config.model == "logreg":
        inputs = stats_inputs(mapped, config.logreg.normalisation)
        input_rows: tuple[int, ...] = ()
    else:
        batch = feature_batch(mapped, config.cnn.inputs)
        inputs = model_input(batch, config.cnn.inputs)
        input_rows = tuple(int(batch[name].shape[1]) for name in config.cnn.inputs)
        if config.cnn.stats_fusion_weight > 0:
            stats = stats_inputs(mapped, config.cnn.stats_normalisation)
    return TrainingData(mapped, labels, inputs, label_indices(mapped, labels), input_rows, stats), report


def stats_inputs(frame: pd.DataFrame, normalisation: StatsNormalisation) -> np.ndarray:
    """The ``stats`` vectors ``[n, d]`` of ``frame``'s rows, standardised per speaker for ``"speaker"``."""
    stats = feature_batch(frame, ["stats"])["stats"]
    return speaker_standardise(stats, speaker_keys(frame)) if normalisation == "speaker" else stats


def fit_model(
    data: TrainingData, rows: np.ndarray, config: TrainConfig, *, seed: int, log_prefix: str, epochs: int | None = None,
    distributed_runner: DistributedRunner | None = None,
) -> tuple[TrainedModel, list[tuple[str, TrainingHistory]]]:
    """Fit ``config.model`` on ``rows`` (indices into ``data``), as every fold and the final refit do.

    The CNN early-stops on speakers held out of ``rows`` unless ``epochs`` fixes the epoch count;
    with ``cnn.ensemble = N`` it trains N networks seeded ``member_seed(seed, k)``; with
    ``cnn.stats_fusion_weight > 0`` it also fits the stats model on all of ``rows``.

    Returns
    -------
    model
        The fitted model (a :class:`CnnEnsemble` when N > 1, a :class:`FusedModel` with a stats
        model).
    histories
        Each network's training history, named by its ensemble member ("" for a single network);
        empty for logreg.
    """
    n_classes = len(data.labels)
    if config.model == "logreg":
        model = fit_logreg(data.inputs[rows], data.targets[rows], n_classes=n_classes, config=config.logreg, seed=seed)
        return model, []
    train_rows, validation = rows, None
    if epochs is None:
        inner = holdout_split(
            data.frame.iloc[rows], config.split.method, test_fraction=config.cnn.validation_fraction, seed=seed
        )
        train_rows = rows[inner.train_index]
        validation_rows = rows[inner.test_index]
        validation_rows = validation_rows[data.is_original[validation_rows]]
        validation = (data.inputs[validation_rows], data.targets[validation_rows])
        logger.info("%strain on %d rows, early-stop on %d original clips of held-out %s",
                    log_prefix, len(train_rows), len(validation_rows),
                    "speakers" if config.split.method == "speaker" else "clips")
    n_members = config.cnn.ensemble
    members, histories = [], []
    for member in range(n_members):
        name = f"member {member + 1}/{n_members}" if n_members > 1 else ""
        prefix = f"{log_prefix}{name}: " if name else log_prefix
        if distributed_runner is not None:
            network, history = train_distributed(
                distributed_runner, (data.inputs[train_rows], data.targets[train_rows]), config.cnn,
                n_classes=n_classes, input_rows=data.input_rows, seed=member_seed(seed, member), validation=validation,
                epochs=epochs, log_prefix=prefix,
            )
        else:
            network = build_model(
                config.cnn, input_rows=data.input_rows, n_classes=n_classes, train_features=data.inputs[train_rows],
                seed=member_seed(seed, member),
            )
            history = train_model(
                network, data.inputs[train_rows], data.targets[train_rows], config.cnn,
                seed=member_seed(seed, member), validation=validation, epochs=epochs, log_prefix=prefix,
            )
        members.append(network)
        histories.append((name, history))
    cnn: CnnModel = members[0]
    if n_members > 1:
        architecture = CnnArchitecture.from_config(config.cnn, input_rows=data.input_rows, n_classes=n_classes)
        cnn = CnnEnsemble(architecture, members)
    if config.cnn.stats_fusion_weight == 0:
        return cnn, histories
    assert data.stats is not None
    stats_model = fit_logreg(data.stats[rows], data.targets[rows], n_classes=n_classes, config=config.stats_model_config(),
                             seed=seed)
    return FusedModel(cnn, stats_model, config.cnn.stats_fusion_weight), histories


def predict_rows(model: TrainedModel, data: TrainingData, rows: np.ndarray) -> np.ndarray:
    """Class probabilities ``[len(rows), n_classes]`` of ``model`` for ``rows`` of ``data``."""
    if isinstance(model, LogregModel):
        return model.predict_proba(data.inputs[rows])
    if isinstance(model, FusedModel):
        assert data.stats is not None
        return model.predict_proba(data.inputs[rows], data.stats[rows])
    return cnn_predict_proba(model, data.inputs[rows])


def evaluate_split(model: TrainedModel, data: TrainingData, split: Split) -> dict[str, Any]:
    """Score the original clips of ``split``'s test side: rows, predictions, metrics and split summary."""
    rows = split.test_index[data.is_original[split.test_index]]
    probabilities = predict_rows(model, data, rows)
    predicted = probabilities.argmax(axis=1)
    return {
        "rows": rows,
        "predicted": predicted,
        "metrics": classification_metrics(data.targets[rows], predicted, data.labels),
        **split.summary(data.frame),
        "test_rows_scored": int(len(rows)),
    }


def metrics_report(
    data: TrainingData, config: TrainConfig, taxonomy: Taxonomy, splits: list[Split], fold_results: list[dict[str, Any]]
) -> dict[str, Any]:
    """``metrics.json``'s content: pooled and per-corpus metrics, and per-fold ones with their summary."""
    rows = np.concatenate([result["rows"] for result in fold_results])
    predicted = np.concatenate([result["predicted"] for result in fold_results])
    truth = data.targets[rows]
    pooled = classification_metrics(truth, predicted, data.labels)
    report: dict[str, Any] = {
        "model": config.model,
        "taxonomy": taxonomy.name,
        "labels": data.labels,
        "split": {**to_dict(config.split), "description": config.split.describe(), "seed": config.seed},
        "evaluated_on": "original clips of the test side; augmented copies are kept off the training side but not scored",
        "pooled": pooled,
        "per_corpus": grouped_metrics(truth, predicted, data.frame["corpus"].to_numpy()[rows], data.labels),
    }
    if len(splits) > 1:
        report["folds"] = [
            {key: value for key, value in result.items() if key not in ("rows", "predicted")} for result in fold_results
        ]
        report["summary"] = summarise_folds([result["metrics"] for result in fold_results])
    else:
        report["summary"] = {name: pooled[name] for name in ("accuracy", "ua", "macro_f1")}
        report["holdout"] = {key: value for key, value in fold_results[0].items() if key not in ("rows", "predicted", "metrics")}
    return report


def data_summary(data: TrainingData, report: TaxonomyReport) -> dict[str, Any]:
    """What the model was trained on (rows per label, corpus, speaker; taxonomy mapping) for ``config.json``."""
    frame = data.frame
    original = data.is_original
    speakers = speaker_keys(frame, allow_missing=True)
    return {
        "rows": int(len(frame)),
        "original_rows": int(original.sum()),
        "augmented_rows": int((~original).sum()),
        "rows_per_label": {label: int(count) for label, count in frame["label"].value_counts().reindex(data.labels).items()},
        "rows_per_corpus": {str(k): int(v) for k, v in frame["corpus"].value_counts().sort_index().items()},
        "rows_per_corpus_and_label": {
            str(corpus): {str(label): int(count) for label, count in group["label"].value_counts().sort_index().items()}
            for corpus, group in frame.groupby("corpus", sort=True)
        },
        "speakers": sorted(set(speakers)),
        "n_speakers": len(set(speakers)),
        "taxonomy_report": report.to_dict(),
    }
