"""The model kinds as the training protocol sees them: inputs, fit, predict, the bundle's model.

:mod:`training.protocol` runs every kind through one loop (folds → test → refit → plots →
bundle); each class here supplies the pieces that differ, and nothing else:

- ``training_data(frame, labels, table_config)``: the taxonomy-mapped rows with the kind's
  inputs (:class:`training.data.TrainingData`); called once, before the folds.
- ``fit(data, rows, seed=, log_prefix=, epochs=)``: a model fitted on ``rows``, the training
  history of each network it trained (named by ensemble member, ``""`` for one network), and
  its probabilities on speakers held out of ``rows`` (:class:`training.calibration.HeldOut`,
  which temperature scaling is fitted on), or ``None``. With ``epochs=None`` the torch kinds
  early-stop on speakers held out of ``rows`` and return their probabilities; a refit after
  cross-validation passes the folds' median best epoch instead and holds out nothing. Logreg
  has no early stopping: it holds out ``logreg.calibration_fraction`` of the speakers for a
  second fit used only to predict them, and keeps the fit on all ``rows``.
- ``predict(model, data, rows)``: class probabilities ``[len(rows), n_labels]``.
- ``bundle_model(model)``: what :func:`training.bundle.load.save_bundle` writes.
- ``training_facts()``: extra entries of the bundle's ``training`` record, known after the fits.
- ``stats_normalisation``: how the stats vectors of a logreg or fused stats model were normalised.
- ``stats_inputs``: the feature columns side by side in those vectors (``stats``, ``egemaps``).

The model code itself (configs, networks, training loops, predictors) is in
:mod:`training.models`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ser_udfs.encoders.loading import PretrainedSource, load_encoder, load_feature_extractor
from ser_udfs.encoders.torch_runtime import resolve_device, resolve_precision
from ser_udfs.features.config import FeatureConfig
from training.calibration import HeldOut
from training.data import WAVEFORM_INPUT, TrainingData, feature_batch, label_indices, stats_inputs, table_waveforms
from training.fitting import TrainingHistory
from training.models.cnn import CnnArchitecture, CnnConfig, CnnEnsemble, CnnModel, build_model, member_seed, model_input, train_model
from training.models.cnn import predict_proba as cnn_predict_proba
from training.models.cnn_distributed import DistributedRunner, train_distributed
from training.models.embedding_head import (
    EmbeddingClassifier,
    EmbeddingHead,
    EmbeddingHeadTrainConfig,
    HeadArchitecture,
    fit_head,
    head_probabilities,
    training_embeddings,
)
from training.models.fusion import FusedModel, choose_fusion_weight
from training.models.hf_classifier import load_classifier
from training.models.logreg import LogregConfig, LogregModel, fit_logreg, fit_logreg_searched
from training.models.wav2vec2 import FinetuneConfig, Wav2Vec2Classifier, fine_tune
from training.speaker_norm import StatsNormalisation
from training.splits import group_keys
from training.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: What ``fit`` returns besides the model: ``(member name, history)`` per trained network.
Histories = list[tuple[str, TrainingHistory]]


def held_out_predictions(kind: Any, model: Any, data: TrainingData, rows: np.ndarray | None) -> HeldOut | None:
    """``kind.predict`` of ``model`` on held-out ``rows`` with their targets, or ``None`` without rows."""
    if rows is None or len(rows) == 0:
        return None
    return HeldOut(kind.predict(model, data, rows), data.targets[rows])


def chosen_record(key: str, chosen: list[float]) -> dict[str, Any]:
    """``{key: chosen}`` when a search ran, else ``{}``: the value (a C, a fusion weight) of each fit in
    fit order (each fold's, then the bundle's refit after k folds; one value for a holdout split)."""
    return {key: list(chosen)} if chosen else {}


class LogregKind:
    """``--model logreg``: a logistic regression on the stats vectors."""

    def __init__(self, config: LogregConfig, *, split_method: str) -> None:
        self.config = config
        self.split_method = split_method
        self.stats_normalisation: StatsNormalisation = config.normalisation
        self.stats_inputs: tuple[str, ...] = config.inputs
        #: C chosen by ``logreg.regularisation_search`` in each fit, in fit order.
        self.chosen_c: list[float] = []

    def training_data(self, frame: pd.DataFrame, labels: list[str], table_config: FeatureConfig) -> TrainingData:
        """Stats vectors ``[n, d]``, standardised per speaker if ``logreg.normalisation`` says so."""
        return TrainingData(frame, labels, stats_inputs(frame, self.config.normalisation, self.config.inputs),
                            label_indices(frame, labels))

    def fit(self, data: TrainingData, rows: np.ndarray, *, seed: int, log_prefix: str,
            epochs: int | None) -> tuple[LogregModel, Histories, HeldOut | None]:
        """Fit on ``rows`` (no epochs, no early stopping), and a second fit without held-out speakers for calibration.

        The model returned is fitted on all ``rows``, so its figures do not depend on calibration;
        its held-out probabilities come from a fit on the other speakers, since a model cannot be
        calibrated on clips it trained on (``None`` when ``rows`` hold a single speaker).
        """
        groups = group_keys(data.frame.iloc[rows], self.split_method)
        model, config = fit_logreg_searched(data.inputs[rows], data.targets[rows], n_classes=len(data.labels),
                                            config=self.config, seed=seed, corpora=data.corpora[rows], groups=groups)
        if self.config.regularisation_search:
            self.chosen_c.append(config.regularisation_c)
        if len(set(groups)) < 2:
            return model, [], None
        train, held_out = data.early_stopping_rows(rows, method=self.split_method, fraction=self.config.calibration_fraction,
                                                   seed=seed, log_prefix=f"{log_prefix}calibration: ")
        calibration_model = fit_logreg(data.inputs[train], data.targets[train], n_classes=len(data.labels), config=config,
                                       seed=seed, corpora=data.corpora[train])
        return model, [], held_out_predictions(self, calibration_model, data, held_out)

    def predict(self, model: LogregModel, data: TrainingData, rows: np.ndarray) -> np.ndarray:
        """Probabilities ``[len(rows), n_labels]`` (each row with its corpus's weights, if the model has them)."""
        return model.predict_proba(data.inputs[rows], data.corpora[rows])

    def bundle_model(self, model: LogregModel) -> LogregModel:
        """The model itself."""
        return model

    def training_facts(self) -> dict[str, Any]:
        """With a search, the C each fit chose (:func:`chosen_record`)."""
        return chosen_record("regularisation_c_chosen", self.chosen_c)


class CnnKind:
    """``--model cnn``: one network or an ensemble, optionally fused with a stats model, in-process or DDP.

    With ``cnn.ensemble = N`` each fit trains N networks seeded ``member_seed(seed, k)``; with
    ``cnn.stats_fusion_weight > 0`` it also fits the stats model (``stats_config``) on all of
    the fit's rows; with a ``distributed_runner`` (e.g. ``TorchDistributor(...).run``) each
    network trains in a DDP group.
    """

    def __init__(self, config: CnnConfig, stats_config: LogregConfig, *, split_method: str,
                 distributed_runner: DistributedRunner | None = None) -> None:
        self.config = config
        self.stats_config = stats_config
        self.split_method = split_method
        self.distributed_runner = distributed_runner
        self.stats_normalisation: StatsNormalisation = stats_config.normalisation
        self.stats_inputs: tuple[str, ...] = stats_config.inputs
        #: C chosen by ``cnn.stats_regularisation_search`` in each fit of the fused stats model, in fit order.
        self.chosen_c: list[float] = []
        #: Fusion weight of each fit with ``cnn.stats_fusion_weight_search``, in fit order.
        self.chosen_weights: list[float] = []

    def training_data(self, frame: pd.DataFrame, labels: list[str], table_config: FeatureConfig) -> TrainingData:
        """The stacked maps ``[n, rows, frames]`` of ``cnn.inputs`` (and the stats of a fused stats model)."""
        if self.config.torch_threads > 0:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        batch = feature_batch(frame, self.config.inputs)
        inputs = model_input(batch, self.config.inputs)
        input_rows = tuple(int(batch[name].shape[1]) for name in self.config.inputs)
        stats = (stats_inputs(frame, self.config.stats_normalisation, self.stats_config.inputs)
                 if self.config.stats_fusion_weight > 0 else None)
        return TrainingData(frame, labels, inputs, label_indices(frame, labels), input_rows, stats)

    def fit(self, data: TrainingData, rows: np.ndarray, *, seed: int, log_prefix: str,
            epochs: int | None) -> tuple[CnnModel | FusedModel, Histories, HeldOut | None]:
        """Train the networks on ``rows`` (early-stopping on held-out speakers unless ``epochs`` is given).

        A fused stats model is fitted on all ``rows``; the held-out speakers' fused probabilities
        come from a second stats model fitted without them, so that no part of the model that
        predicts them for calibration has seen them; their CNN-alone probabilities (the part call
        scoring falls back to without speaker statistics) come with them.
        """
        train_rows, held_out, validation = data.fit_rows(rows, epochs=epochs, method=self.split_method,
                                               fraction=self.config.validation_fraction, seed=seed, log_prefix=log_prefix)
        n_members = self.config.ensemble
        members, histories = [], []
        for member in range(n_members):
            name = f"member {member + 1}/{n_members}" if n_members > 1 else ""
            network, history = self._train_network(data, train_rows, seed=member_seed(seed, member), validation=validation,
                                                   epochs=epochs, log_prefix=f"{log_prefix}{name}: " if name else log_prefix)
            members.append(network)
            histories.append((name, history))
        cnn: CnnModel = members[0]
        if n_members > 1:
            architecture = CnnArchitecture.from_config(self.config, input_rows=data.input_rows, n_classes=len(data.labels))
            cnn = CnnEnsemble(architecture, members)
        if self.config.stats_fusion_weight == 0:
            return cnn, histories, held_out_predictions(self, cnn, data, held_out)
        stats_model, stats_config = self.fit_stats_model(data, rows, seed=seed)
        if held_out is None:
            return FusedModel(cnn, stats_model, self._refit_weight()), histories, None
        calibration_stats = self.held_out_stats_model(data, train_rows, stats_config, seed=seed)
        fallback = cnn_predict_proba(cnn, data.inputs[held_out])
        weight = self.fusion_weight(fallback, calibration_stats, data, held_out)
        fused = held_out_predictions(self, FusedModel(cnn, calibration_stats, weight), data, held_out)
        assert fused is not None
        return (FusedModel(cnn, stats_model, weight), histories,
                HeldOut(fused.probabilities, fused.targets, fallback_probabilities=fallback))

    def held_out_stats_model(self, data: TrainingData, train_rows: np.ndarray, stats_config: LogregConfig, *,
                             seed: int) -> LogregModel:
        """The stats model refitted on ``train_rows`` alone (the fit's rows less its held-out speakers) with
        the fit's resolved ``stats_config``: what predicts the held-out speakers for calibration and
        for the choice of the fusion weight."""
        assert data.stats is not None
        return fit_logreg(data.stats[train_rows], data.targets[train_rows], n_classes=len(data.labels),
                          config=stats_config, seed=seed, corpora=data.corpora[train_rows])

    def fusion_weight(self, cnn_probabilities: np.ndarray, stats_model: LogregModel, data: TrainingData,
                      held_out: np.ndarray) -> float:
        """The fusion weight of a fit: ``cnn.stats_fusion_weight``, or with ``cnn.stats_fusion_weight_search``
        the candidate that fuses best on the held-out clips ``held_out`` ``[m]`` (indices into ``data``).

        ``cnn_probabilities`` ``[m, n_classes]`` are the CNN's on them; ``stats_model`` must not
        have trained on them either.
        """
        if not self.config.stats_fusion_weight_search:
            return self.config.stats_fusion_weight
        assert data.stats is not None
        stats = stats_model.predict_proba(data.stats[held_out], data.corpora[held_out])
        weight = choose_fusion_weight(cnn_probabilities, stats, data.targets[held_out], self.config.stats_fusion_weight_search)
        self.chosen_weights.append(weight)
        return weight

    def _refit_weight(self) -> float:
        """The weight of a fit that holds out nobody: the median of the weights chosen so far (the
        folds' before the bundle's refit) when searching and there are any, else ``cnn.stats_fusion_weight``."""
        if not self.config.stats_fusion_weight_search or not self.chosen_weights:
            return self.config.stats_fusion_weight
        weight = float(np.median(self.chosen_weights))
        logger.info("fusion weight %g: the median of the %d weights chosen on held-out speakers", weight, len(self.chosen_weights))
        self.chosen_weights.append(weight)
        return weight

    def fit_stats_model(self, data: TrainingData, rows: np.ndarray, *, seed: int) -> tuple[LogregModel, LogregConfig]:
        """The fused stats model fitted on ``rows`` (its C chosen on them when the config searches),
        and the config it was fitted with (the search resolved)."""
        assert data.stats is not None
        model, config = fit_logreg_searched(data.stats[rows], data.targets[rows], n_classes=len(data.labels),
                                            config=self.stats_config, seed=seed, corpora=data.corpora[rows],
                                            groups=group_keys(data.frame.iloc[rows], self.split_method))
        if self.stats_config.regularisation_search:
            self.chosen_c.append(config.regularisation_c)
        return model, config

    def _train_network(self, data: TrainingData, rows: np.ndarray, *, seed: int,
                       validation: tuple[np.ndarray, np.ndarray] | None, epochs: int | None,
                       log_prefix: str) -> tuple[Any, TrainingHistory]:
        """One network trained on ``rows``, in this process or through the DDP runner."""
        n_classes = len(data.labels)
        if self.distributed_runner is not None:
            return train_distributed(
                self.distributed_runner, (data.inputs[rows], data.targets[rows]), self.config, n_classes=n_classes,
                input_rows=data.input_rows, seed=seed, validation=validation, epochs=epochs, log_prefix=log_prefix,
                train_corpora=data.corpora[rows],
            )
        network = build_model(self.config, input_rows=data.input_rows, n_classes=n_classes,
                              train_features=data.inputs[rows], seed=seed)
        history = train_model(network, data.inputs[rows], data.targets[rows], self.config, seed=seed,
                              validation=validation, epochs=epochs, log_prefix=log_prefix, train_corpora=data.corpora[rows])
        return network, history

    def predict(self, model: CnnModel | FusedModel, data: TrainingData, rows: np.ndarray) -> np.ndarray:
        """Probabilities ``[len(rows), n_labels]`` (fused with the stats model's if there is one)."""
        if isinstance(model, FusedModel):
            assert data.stats is not None
            return model.predict_proba(data.inputs[rows], data.stats[rows], data.corpora[rows])
        return cnn_predict_proba(model, data.inputs[rows])

    def bundle_model(self, model: CnnModel | FusedModel) -> CnnModel | FusedModel:
        """The model itself."""
        return model

    def training_facts(self) -> dict[str, Any]:
        """With a search for the fused stats model, the C each fit chose (:func:`chosen_record`); with
        a search for the fusion weight, each fit's weight (``stats_fusion_weight_chosen``)."""
        return {**chosen_record("stats_regularisation_c_chosen", self.chosen_c),
                **chosen_record("stats_fusion_weight_chosen", self.chosen_weights)}


class Wav2Vec2Kind:
    """``--model wav2vec2``: a checkpoint fine-tuned with a classification head on the ``waveform`` column."""

    stats_normalisation: StatsNormalisation = "global"
    stats_inputs: tuple[str, ...] = ("stats",)

    def __init__(self, config: FinetuneConfig, *, split_method: str, taxonomy: Taxonomy) -> None:
        self.config = config
        self.split_method = split_method
        self.taxonomy = taxonomy
        self.device = resolve_device(config.device)
        self.label_maps: list[dict[str, Any]] = []

    def training_data(self, frame: pd.DataFrame, labels: list[str], table_config: FeatureConfig) -> TrainingData:
        """Waveforms ``[n, samples]``, checked against the checkpoint's extractor."""
        if self.config.torch_threads > 0:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        extractor = load_feature_extractor(PretrainedSource.resolve(self.config.pretrained))
        return TrainingData(frame, labels, table_waveforms(frame, table_config, extractor), label_indices(frame, labels))

    def fit(self, data: TrainingData, rows: np.ndarray, *, seed: int, log_prefix: str,
            epochs: int | None) -> tuple[Wav2Vec2Classifier, Histories, HeldOut | None]:
        """Load the checkpoint afresh (its head mapped onto our labels) and fine-tune it on ``rows``."""
        import torch

        settings = self.config
        torch.manual_seed(seed)
        model, extractor, label_map = load_classifier(
            settings.pretrained, data.labels, self.taxonomy,
            config_overrides={"mask_time_prob": settings.mask_time_prob, "layerdrop": settings.layerdrop},
            new_head_overrides={"classifier_proj_size": settings.classifier_proj_size,
                                "use_weighted_layer_sum": settings.use_weighted_layer_sum},
        )
        self.label_maps.append(label_map)
        model.to(self.device)
        train, held_out, validation = data.fit_rows(rows, epochs=epochs, method=self.split_method,
                                                    fraction=settings.validation_fraction, seed=seed,
                                                    log_prefix=log_prefix)
        history = fine_tune(model, extractor, data.inputs[train], data.targets[train], settings, seed=seed,
                            validation=validation, epochs=epochs, log_prefix=log_prefix)
        classifier = Wav2Vec2Classifier(model, extractor, trim_padding=settings.trim_padding,
                                        batch_size=settings.eval_batch_size, precision=settings.precision)
        return classifier, [("", history)], held_out_predictions(self, classifier, data, held_out)

    def predict(self, model: Wav2Vec2Classifier, data: TrainingData, rows: np.ndarray) -> np.ndarray:
        """Probabilities ``[len(rows), n_labels]``."""
        return model.predict_proba({WAVEFORM_INPUT: data.inputs[rows]})

    def bundle_model(self, model: Wav2Vec2Classifier) -> Wav2Vec2Classifier:
        """The classifier itself."""
        return model

    def training_facts(self) -> dict[str, Any]:
        """The checkpoint, how its labels were used, the device and precision."""
        return {
            "pretrained": self.config.pretrained,
            "label_map": self.label_maps[0] if self.label_maps else {},
            "device": str(self.device),
            "precision": resolve_precision(self.config.precision, self.device),
        }


class EmbeddingHeadKind:
    """``--model embed-logreg|embed-mlp``: a head on pooled embeddings of a frozen encoder."""

    stats_normalisation: StatsNormalisation = "global"
    stats_inputs: tuple[str, ...] = ("stats",)

    def __init__(self, config: EmbeddingHeadTrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.embedding.device)
        self.encoder = load_encoder(config.embedding.pretrained, device=self.device)
        self.facts: dict[str, Any] = {}

    def training_data(self, frame: pd.DataFrame, labels: list[str], table_config: FeatureConfig) -> TrainingData:
        """Pooled embeddings ``[n, vectors, hidden]``: from an embeddings table, or computed from waveforms."""
        pooled, self.spec, self.facts = training_embeddings(frame, self.encoder, self.config, table_config, self.device)
        self.architecture = HeadArchitecture(
            n_layers=self.spec.n_vectors, hidden_size=int(pooled.shape[2]), n_classes=len(labels),
            hidden_units=self.config.head.mlp_hidden_units if self.config.model == "embed-mlp" else 0,
            dropout=self.config.head.dropout,
        )
        return TrainingData(frame, labels, pooled, label_indices(frame, labels))

    def fit(self, data: TrainingData, rows: np.ndarray, *, seed: int, log_prefix: str,
            epochs: int | None) -> tuple[EmbeddingHead, Histories, HeldOut | None]:
        """Train a head on ``rows`` (early-stopping on held-out speakers unless ``epochs`` is given)."""
        head_config = self.config.head
        train, held_out, validation = data.fit_rows(rows, epochs=epochs, method=self.config.split.method,
                                                    fraction=head_config.validation_fraction, seed=seed,
                                                    log_prefix=log_prefix)
        head, history = fit_head(data.inputs[train], data.targets[train], head_config, architecture=self.architecture,
                                 seed=seed, validation=validation, epochs=epochs, log_prefix=log_prefix)
        return head, [("", history)], held_out_predictions(self, head, data, held_out)

    def predict(self, model: EmbeddingHead, data: TrainingData, rows: np.ndarray) -> np.ndarray:
        """Probabilities ``[len(rows), n_labels]``."""
        return head_probabilities(model, data.inputs[rows])

    def bundle_model(self, model: EmbeddingHead) -> EmbeddingClassifier:
        """The encoder with the head: a predictor from waveforms."""
        return EmbeddingClassifier(self.encoder.model, self.encoder.extractor, model, self.spec, kind=self.config.model,
                                   batch_size=self.config.embedding.batch_size, precision=self.config.embedding.precision)

    def training_facts(self) -> dict[str, Any]:
        """The encoder and where the embeddings came from."""
        return {"pretrained": self.config.embedding.pretrained, "embedding": self.facts}
