"""The one training protocol every model kind goes through: what ``jobs/train.py`` calls.

:func:`train_from_frame` maps labels onto the taxonomy, has the model kind
(:mod:`training.kinds`) build its inputs, splits (speaker-independent k-fold by default), fits
and tests one model per fold, then fits the bundle's model, writes the plots and the bundle:

- k-fold (``split.folds >= 2``): metrics are the folds' test figures (per fold, mean ± std, and
  pooled over folds); the bundle's model is refit on all rows afterwards (the torch kinds for
  the median of the folds' best epoch counts, since no speakers are left for early stopping;
  an ensemble's members all count, and each member is refit).
- holdout (``split.folds = 1``): the bundle's model is the one tested.

The torch kinds early-stop on speakers held out of each fit's training side
(:meth:`training.data.TrainingData.fit_rows`).

Calibration (:mod:`training.calibration`): each fit also returns its probabilities on the
speakers it held out (logreg holds some out for a second fit, :class:`training.kinds.LogregKind`).
Each fold fits a temperature on its own held-out speakers and applies it to its test clips, so
``metrics.json`` reports ECE and Brier score before and after calibration per fold and pooled,
from speakers the temperature never saw. The bundle's temperature is fitted on the held-out
speakers of the bundle model's own fit when it has them (holdout split; logreg's refit), else
on the folds' held-out speakers pooled (the torch kinds' refit trains on all rows, for a fixed
number of epochs, and holds none out).

Test figures count original clips only: augmented copies of a test speaker's clips stay on the
test side (they are never trained on) but are not scored, so the figures describe real clips.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

import numpy as np
import pandas as pd

from ser_udfs.errors import UserError
from ser_udfs.features.config import FeatureConfig
from ser_udfs.progress import Progress
from ser_udfs.settings import to_dict
from training.bundle.load import save_bundle
from training.calibration import HeldOut, apply_temperature, fit_temperature, pool_held_out
from training.data import TrainingData, table_feature_config
from training.fitting import TrainingHistory, release_accelerator_memory
from training.kinds import CnnKind, EmbeddingHeadKind, LogregKind, Wav2Vec2Kind
from training.metrics import (
    CALIBRATION_BINS,
    calibration_figures,
    classification_metrics,
    format_headline,
    grouped_metrics,
    summarise_calibration,
    summarise_folds,
)
from training.models.cnn import CnnConfig
from training.models.cnn_distributed import DistributedRunner
from training.models.embedding_head import EmbeddingHeadTrainConfig
from training.models.logreg import LogregConfig
from training.models.wav2vec2 import Wav2Vec2TrainConfig
from training.plots import plot_confusion_matrix, plot_reliability_diagram, plot_training_curves
from training.speaker_norm import StatsNormalisation
from training.splits import Split, SplitConfig, make_splits, speaker_keys
from training.taxonomy import Taxonomy, TaxonomyReport, apply_taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

CONFUSION_PLOT = "confusion_matrix.png"
CURVES_PLOT = "training_curves.png"
RELIABILITY_PLOT = "reliability_diagram.png"
#: Entries of a split's result that hold arrays (or held-out sets), kept out of ``metrics.json``.
ARRAY_ENTRIES = ("rows", "predicted", "probabilities", "calibrated", "held_out")


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
            return list(self.logreg.inputs)
        return [*self.cnn.inputs, *(self.cnn.stats_inputs if self.cnn.stats_fusion_weight > 0 else [])]

    def model_settings(self) -> dict[str, Any]:
        """The hyper-parameters of the chosen model kind, as a dict."""
        return to_dict(self.cnn if self.model == "cnn" else self.logreg)

    def stats_model_config(self) -> LogregConfig:
        """The logistic regression on stats: the logreg model, or the stats model fused with the CNN."""
        if self.model == "logreg":
            return self.logreg
        return LogregConfig(inputs=self.cnn.stats_inputs, regularisation_c=self.cnn.stats_regularisation_c,
                            regularisation_search=self.cnn.stats_regularisation_search,
                            class_balanced=self.cnn.class_balanced, normalisation=self.cnn.stats_normalisation,
                            per_corpus_weights=self.cnn.stats_per_corpus_weights)


#: The config of one training run: every kind's has ``model``, ``taxonomy``, ``seed``, ``split``
#: and ``model_settings()``.
RunConfig = TrainConfig | Wav2Vec2TrainConfig | EmbeddingHeadTrainConfig


class ModelKind(Protocol):
    """What a model kind supplies to the protocol (the classes of :mod:`training.kinds`)."""

    stats_normalisation: StatsNormalisation
    stats_inputs: tuple[str, ...]

    def training_data(self, frame: pd.DataFrame, labels: list[str], table_config: FeatureConfig) -> TrainingData:
        """The mapped rows with the kind's inputs."""

    def fit(self, data: TrainingData, rows: np.ndarray, *, seed: int, log_prefix: str,
            epochs: int | None) -> tuple[Any, list[tuple[str, TrainingHistory]], HeldOut | None]:
        """A model fitted on ``rows``, the history of each network trained (by member name), and
        its probabilities on speakers held out of ``rows`` (``None`` when it held none out)."""

    def predict(self, model: Any, data: TrainingData, rows: np.ndarray) -> np.ndarray:
        """Class probabilities ``[len(rows), n_labels]``."""

    def bundle_model(self, model: Any) -> Any:
        """What the bundle saves for the final ``model``."""

    def training_facts(self) -> dict[str, Any]:
        """Extra entries of the bundle's ``training`` record."""


def model_kind(config: RunConfig, *, taxonomy: Taxonomy, distributed_runner: DistributedRunner | None = None) -> ModelKind:
    """The :mod:`training.kinds` object that trains ``config.model``."""
    if distributed_runner is not None and config.model != "cnn":
        raise UserError(f"distributed training is for the CNN only, not {config.model}; train it in one process")
    if isinstance(config, TrainConfig):
        if config.model == "logreg":
            return LogregKind(config.logreg, split_method=config.split.method)
        return CnnKind(config.cnn, config.stats_model_config(), split_method=config.split.method,
                       distributed_runner=distributed_runner)
    if isinstance(config, Wav2Vec2TrainConfig):
        return Wav2Vec2Kind(config.wav2vec2, split_method=config.split.method, taxonomy=taxonomy)
    return EmbeddingHeadKind(config)


def train_from_frame(
    frame: pd.DataFrame,
    config: RunConfig,
    *,
    feature_config: FeatureConfig | Mapping[str, Any],
    output_dir: str | Path,
    taxonomy: Taxonomy | None = None,
    distributed_runner: DistributedRunner | None = None,
) -> dict[str, Any]:
    """Fit, test and save a model bundle of any kind from features rows.

    Parameters
    ----------
    frame
        Features rows (see ``docs/CONTRACTS.md``), e.g. ``pd.read_parquet(table)``; needs
        ``label``, ``corpus``, ``speaker``, ``path``, ``augmentation``,
        ``feature_config_version`` and the model's feature columns (``waveform`` for the
        transformer kinds, or an embeddings table's columns for ``embed-*``).
    config
        Model kind, taxonomy, seed, split and hyper-parameters.
    feature_config
        The table's feature config (``"feature_config"`` in its ``_manifest.json``).
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
    kind = model_kind(config, taxonomy=taxonomy, distributed_runner=distributed_runner)
    mapped, labels, report = map_labels(frame, taxonomy)
    data = kind.training_data(mapped, labels, table_config)
    splits = make_splits(data.frame, config.split, seed=config.seed)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)

    fold_results, histories, kept = cross_validate(kind, data, splits, seed=config.seed)
    metrics = metrics_report(data, config, taxonomy, splits, fold_results)
    if len(splits) > 1:
        final_model, final_note, final_histories, final_held_out = refit(kind, data, histories,
                                                                         seed=config.seed + len(splits))
        histories += final_histories
    else:
        final_model, final_note = kept, "the model tested on the holdout split"
        final_held_out = fold_results[0]["held_out"]
    metrics["final_model"] = final_note
    calibration = bundle_calibration(final_held_out, [result["held_out"] for result in fold_results])
    metrics["calibration"]["bundle"] = calibration
    write_plots(output, metrics, histories, title=f"{config.model}, {taxonomy.name}\n{config.split.describe()}")
    training = {
        "data": data_summary(data, report),
        "split": split_record(config),
        "seed": config.seed,
        "model_settings": config.model_settings(),
        "histories": {name: history.to_dict() for name, history in histories},
        "final_model": final_note,
        **kind.training_facts(),
    }
    save_bundle(
        output, model=kind.bundle_model(final_model), taxonomy=taxonomy, labels=data.labels, feature_config=table_config,
        training=training, metrics=metrics, stats_normalisation=kind.stats_normalisation, stats_inputs=kind.stats_inputs,
        calibration=calibration,
    )
    logger.info("%s on %s, %s: %s", config.model, taxonomy.name, config.split.describe(), format_headline(metrics["summary"]))
    return {
        "bundle_dir": str(output),
        "model": config.model,
        "taxonomy": taxonomy.name,
        "labels": data.labels,
        "split": config.split.describe(),
        "metrics": {name: metrics["summary"][name] for name in ("accuracy", "ua", "macro_f1")},
        "per_corpus": {corpus: summary["ua"] for corpus, summary in metrics.get("summary_per_corpus", {}).items()},
    }


def map_labels(frame: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, list[str], TaxonomyReport]:
    """Rows mapped onto ``taxonomy`` and the labels that have rows (at least two), in taxonomy order.

    Returns
    -------
    mapped
        The rows the taxonomy keeps, their labels mapped.
    labels
        The taxonomy's labels that have rows.
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
    return mapped, labels, report


def cross_validate(
    kind: ModelKind, data: TrainingData, splits: list[Split], *, seed: int
) -> tuple[list[dict[str, Any]], list[tuple[str, TrainingHistory]], Any]:
    """Fit on each split's training side and test on its original clips.

    Returns
    -------
    fold_results
        :func:`evaluate_split` of each split, with :func:`calibrate_split`'s entries.
    histories
        ``(run name, history)`` of every network trained (``"fold 2/6 member 1/2"``).
    kept
        The fitted model when there is one split (the holdout's), else ``None``: fold models
        are dropped as soon as they are tested.
    """
    fold_results, histories, kept = [], [], None
    started_s = time.monotonic()
    for number, split in enumerate(splits):
        model, member_histories, held_out = kind.fit(data, split.train_index, seed=seed + number,
                                                     log_prefix=f"{split.name}: ", epochs=None)
        fold_results.append(calibrate_split(evaluate_split(kind, model, data, split), held_out, data))
        histories += [(_run_name(split.name, member), history) for member, history in member_histories]
        logger.info("%s: %s; %s", split.name, format_headline(fold_results[-1]["metrics"]),
                    Progress(number + 1, len(splits), time.monotonic() - started_s).describe("training", unit="folds"))
        kept = model if len(splits) == 1 else None
        del model
        release_accelerator_memory()
    return fold_results, histories, kept


def refit(
    kind: ModelKind, data: TrainingData, histories: list[tuple[str, TrainingHistory]], *, seed: int
) -> tuple[Any, str, list[tuple[str, TrainingHistory]], HeldOut | None]:
    """The bundle's model after cross-validation: refit on all rows, for the folds' median best epoch.

    Returns
    -------
    (model, note, histories, held_out)
        The refit model, the ``final_model`` note of ``metrics.json``, its networks' histories,
        and its probabilities on the speakers it held out (``None`` for a fixed epoch count).
    """
    epochs = int(round(float(np.median([h.best_epoch for _, h in histories])))) if histories else None
    model, member_histories, held_out = kind.fit(data, np.arange(len(data.frame)), seed=seed,
                                                 log_prefix="final fit: ", epochs=epochs)
    note = f"refit on all {len(data.frame)} rows after cross-validation" + (
        f" for {epochs} epochs (median best epoch over folds)" if epochs else ""
    )
    return model, note, [(_run_name("final", member), history) for member, history in member_histories], held_out


def _run_name(run: str, member: str) -> str:
    return " ".join(filter(None, (run, member)))


def evaluate_split(kind: ModelKind, model: Any, data: TrainingData, split: Split) -> dict[str, Any]:
    """Score the original clips of ``split``'s test side: rows, predictions, metrics and split summary."""
    rows = split.test_index[data.is_original[split.test_index]]
    probabilities = kind.predict(model, data, rows)
    predicted = probabilities.argmax(axis=1)
    return {
        "rows": rows,
        "probabilities": probabilities,
        "predicted": predicted,
        "metrics": classification_metrics(data.targets[rows], predicted, data.labels),
        **split.summary(data.frame),
        "test_rows_scored": int(len(rows)),
    }


def calibrate_split(result: dict[str, Any], held_out: HeldOut | None, data: TrainingData) -> dict[str, Any]:
    """``result`` of :func:`evaluate_split` with the fold's calibration.

    The temperature is fitted on the fit's held-out speakers (1, no change, when it held none
    out) and applied to the test clips' probabilities.

    Returns
    -------
    dict
        ``result`` plus ``"held_out"``, ``"calibrated"`` (``[len(rows), k]``) and
        ``"calibration"``: ``{"temperature", "held_out_clips", "before": {"ece", "brier"},
        "after": {...}}`` on the test clips.
    """
    temperature = 1.0 if held_out is None else fit_temperature(held_out.probabilities, held_out.targets)
    calibrated = apply_temperature(result["probabilities"], temperature)
    truth = data.targets[result["rows"]]
    return {
        **result,
        "held_out": held_out,
        "calibrated": calibrated,
        "calibration": {
            "temperature": temperature,
            "held_out_clips": 0 if held_out is None else int(len(held_out.targets)),
            "before": calibration_figures(result["probabilities"], truth),
            "after": calibration_figures(calibrated, truth),
        },
    }


def bundle_calibration(final: HeldOut | None, folds: list[HeldOut | None]) -> dict[str, Any] | None:
    """The bundle's ``calibration`` entry: a temperature fitted on ``final`` (the bundle model's
    own held-out speakers) or else on the folds' held-out speakers pooled; ``None`` when no fit
    held any speakers out (the bundle is then saved uncalibrated). A model with a part that needs
    no speaker statistics (:attr:`HeldOut.fallback_probabilities`) also gets that part's own
    ``fallback_temperature``."""
    held_out, source = final, "held-out speakers of the bundle model's own fit"
    if held_out is None:
        held_out = pool_held_out([fold for fold in folds if fold is not None])
        source = "held-out speakers of the cross-validation folds' fits, pooled (the refit holds none out)"
    if held_out is None:
        logger.warning("no fit held any speakers out: the bundle is saved without calibration")
        return None
    calibration: dict[str, Any] = {
        "method": "temperature",
        "temperature": fit_temperature(held_out.probabilities, held_out.targets),
        "fitted_on_clips": int(len(held_out.targets)),
        "fitted_on": source,
    }
    if held_out.fallback_probabilities is not None:
        calibration["fallback_temperature"] = fit_temperature(held_out.fallback_probabilities, held_out.targets)
    return calibration


def write_plots(output: Path, metrics: Mapping[str, Any], histories: list[tuple[str, TrainingHistory]], *,
                title: str) -> None:
    """The pooled confusion matrix (titled ``title`` and the headline), the pooled reliability
    diagram before and after calibration and, if any, the training curves."""
    pooled_matrix = metrics["pooled"]["confusion_matrix"]
    plot_confusion_matrix(np.array(pooled_matrix["matrix"]), pooled_matrix["labels"], output / CONFUSION_PLOT,
                          title=f"{title}\n{format_headline(metrics['summary'])}")
    calibration = metrics["calibration"]["pooled"]
    plot_reliability_diagram(calibration["before"], calibration["after"], output / RELIABILITY_PLOT, title=title)
    if histories:
        plot_training_curves(histories, output / CURVES_PLOT, title=f"training curves: {title}")


def split_record(config: RunConfig) -> dict[str, Any]:
    """The split settings, their description and the seed, for ``metrics.json`` and ``config.json``."""
    return {**to_dict(config.split), "description": config.split.describe(), "seed": config.seed}


def metrics_report(
    data: TrainingData, config: RunConfig, taxonomy: Taxonomy, splits: list[Split], fold_results: list[dict[str, Any]]
) -> dict[str, Any]:
    """``metrics.json``'s content: pooled and per-corpus metrics, and per-fold ones with their summary
    (with several corpora, also per corpus: each fold's ``per_corpus`` and ``summary_per_corpus``)."""
    rows = np.concatenate([result["rows"] for result in fold_results])
    predicted = np.concatenate([result["predicted"] for result in fold_results])
    truth = data.targets[rows]
    pooled = classification_metrics(truth, predicted, data.labels)
    calibration: dict[str, Any] = {
        "method": "temperature, fitted per fold on the fit's held-out speakers, applied to the fold's test clips",
        "bins": CALIBRATION_BINS,
        "pooled": {
            stage: calibration_figures(np.concatenate([result[key] for result in fold_results]), truth, with_bins=True)
            for stage, key in (("before", "probabilities"), ("after", "calibrated"))
        },
    }
    report: dict[str, Any] = {
        "model": config.model,
        "taxonomy": taxonomy.name,
        "labels": data.labels,
        "split": split_record(config),
        "evaluated_on": "original clips of the test side; augmented copies are kept off the training side but not scored",
        "pooled": pooled,
        "per_corpus": grouped_metrics(truth, predicted, data.frame["corpus"].to_numpy()[rows], data.labels),
        "calibration": calibration,
    }
    if len(splits) > 1:
        report["folds"] = [
            {key: value for key, value in result.items() if key not in ARRAY_ENTRIES} for result in fold_results
        ]
        report["summary"] = summarise_folds([result["metrics"] for result in fold_results])
        corpora = data.frame["corpus"].astype(str).to_numpy()
        if len(set(corpora)) > 1:  # each corpus's figures over the folds that test it
            for record, result in zip(report["folds"], fold_results):
                record["per_corpus"] = grouped_metrics(data.targets[result["rows"]], result["predicted"],
                                                       corpora[result["rows"]], data.labels)
            tested = sorted({corpus for fold in report["folds"] for corpus in fold["per_corpus"]})
            report["summary_per_corpus"] = {
                corpus: summarise_folds([fold["per_corpus"][corpus] for fold in report["folds"] if corpus in fold["per_corpus"]])
                for corpus in tested  # a corpus trained on in every fold (split.assignment) has no test figures
            }
        calibration["summary"] = summarise_calibration([result["calibration"] for result in fold_results])
    else:
        report["summary"] = {name: pooled[name] for name in ("accuracy", "ua", "macro_f1")}
        report["holdout"] = {key: value for key, value in fold_results[0].items()
                             if key not in (*ARRAY_ENTRIES, "metrics")}
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
