"""Model bundles: saving, loading and verifying them, and the predictor API (above the models).

The files and their layout are :mod:`training.bundle.format`'s; this module knows the model
kinds: :data:`MODEL_LOADERS` maps each ``model_kind`` of ``config.json`` to the function that
rebuilds its model from the bundle's files.

:func:`load_bundle` verifies a bundle folder (files present, known model kind, feature config
consistent with its version, labels those of its taxonomy in its order and matching their
digest, tensor names and shapes matching the architecture, weights finite and matching their
recorded digests, a calibration matching its digest) and returns a :class:`Bundle` whose
:meth:`Bundle.predict_proba` takes feature arrays as the project's feature code computes them,
so scoring can feed fresh features without Spark, and returns every model kind's probabilities
through the bundle's temperature scaling (:mod:`training.calibration`; a bundle trained before
calibration existed has none and predicts its model's own probabilities). :attr:`Bundle.files` holds the bytes that loading read; a Spark worker rebuilds
the same bundle from them with :func:`load_bundle_from_files`, without a folder and without
verifying the digests again. A model that standardises stats per speaker
(``stats_normalisation = "speaker"`` in ``config.json``) also needs each row's speaker
(``groups``) and several clips per speaker.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ser_udfs.encoders.inputs import check_sample_rate
from ser_udfs.errors import UserError
from ser_udfs.folders import what_folder_holds
from ser_udfs.features.config import FeatureConfig
from ser_udfs.settings import from_dict, to_dict
from training.bundle.format import (
    BUNDLE_FORMAT,
    CONFIG_FILE,
    METRICS_FILE,
    STATS_MODEL_FILE,
    WEIGHTS_FILE,
    calibration_digest,
    check_tensor_shapes,
    labels_digest,
    library_versions,
    missing_required_files,
    parse_json,
    pickle_file_names,
    read_bundle_files,
    read_numpy_tensors,
    read_torch_tensors,
    read_weight_files,
    state_shapes,
    weight_digests,
    write_json,
    write_numpy_tensors,
    write_torch_tensors,
)
from training.calibration import apply_temperature
from training.models.cnn import CnnArchitecture, CnnEnsemble, CnnModel, EmotionCnn, model_input
from training.models.cnn_onnx import CnnPredictor
from training.models.embedding_head import EmbeddingClassifier
from training.models.fusion import FusedModel
from training.models.logreg import LogregModel
from training.models.wav2vec2 import Wav2Vec2Classifier
from training.speaker_norm import STATS_NORMALISATIONS, StatsNormalisation, speaker_standardise
from training.stats_inputs import STATS_INPUTS, stats_vector
from training.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: A bundle's predictor: what :attr:`Bundle.model` holds.
BundleModel = LogregModel | CnnModel | Wav2Vec2Classifier | EmbeddingClassifier
#: ``loader(files, config, n_classes, where)`` → ``(model, fused stats model or None)``.
ModelLoader = Callable[[Mapping[str, bytes], Mapping[str, Any], int, str], tuple[BundleModel, "LogregModel | None"]]


class Bundle:
    """A loaded, verified model bundle: the uniform predictor used by evaluation and scoring.

    Attributes
    ----------
    path
        Where the bundle was loaded from (its folder, or the ``source`` named to
        :func:`load_bundle_from_files`); messages name it.
    config
        The parsed ``config.json``.
    model
        :class:`~training.models.logreg.LogregModel`, :class:`~training.models.cnn.EmotionCnn`,
        :class:`~training.models.cnn.CnnEnsemble` or a transformer predictor.
    stats_model
        A CNN's fused stats model (:mod:`training.models.fusion`), else ``None``.
    """

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        model: BundleModel,
        stats_model: LogregModel | None = None,
        *,
        files: Mapping[str, bytes],
    ) -> None:
        self.path = path
        self.config = config
        self.model = model
        self.stats_model = stats_model
        self.feature_config = FeatureConfig.from_dict(config["feature_config"])
        self.taxonomy = Taxonomy.from_dict(config["taxonomy"])
        self._files = dict(files)
        #: What computes the CNN's probabilities (PyTorch; scoring may switch to ONNX Runtime,
        #: :func:`training.inference.prepare_for_inference`); ``None`` for other kinds.
        self.cnn_predictor = CnnPredictor(model, "torch") if isinstance(model, (EmotionCnn, CnnEnsemble)) else None

    @property
    def files(self) -> dict[str, bytes]:
        """The raw files loading read, by bundle-relative name: ``config.json`` and the ``*.safetensors``.

        :func:`load_bundle_from_files` rebuilds this bundle from them (e.g. on a Spark worker).
        """
        return dict(self._files)

    @property
    def model_kind(self) -> str:
        """``logreg``, ``cnn``, ``wav2vec2``, ``embed-logreg`` or ``embed-mlp``."""
        return str(self.config["model_kind"])

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in the order of :meth:`predict_proba`'s columns."""
        return tuple(self.config["labels"])

    @property
    def inputs(self) -> tuple[str, ...]:
        """Feature arrays :meth:`predict_proba` needs (``stats``, or ``log_mel`` [+ ``mfcc``])."""
        return tuple(self.config["inputs"])

    @property
    def temperature(self) -> float | None:
        """The temperature :meth:`predict_proba` divides log-probabilities by, ``None`` for an uncalibrated bundle."""
        calibration = self.config.get("calibration")
        return None if calibration is None else float(calibration["temperature"])

    @property
    def fallback_temperature(self) -> float | None:
        """The temperature of the CNN alone in a CNN fused with per-speaker stats (the part that
        needs no speaker statistics), ``None`` where the bundle has none."""
        calibration = self.config.get("calibration") or {}
        value = calibration.get("fallback_temperature")
        return None if value is None else float(value)

    @property
    def needs_speaker_groups(self) -> bool:
        """Whether :meth:`predict_proba` needs each row's speaker (stats standardised per speaker)."""
        return self.config.get("stats_normalisation") == "speaker"

    def predict_proba(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None = None,
                      corpora: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities for a batch of clips: the model's, through :attr:`temperature`.

        Parameters
        ----------
        batch
            Feature arrays as the feature code computes them: ``{"log_mel": [n, n_mels,
            frames], "mfcc": [n, c, frames], "stats": [n, d]}``; only :attr:`inputs` are used.
        groups
            ``[n]`` speaker key per clip; required when :attr:`needs_speaker_groups`, and then the
            batch must hold all the clips of each of its speakers.
        corpora
            ``[n]`` corpus per clip, for a stats model with weights of each training corpus's
            own (``logreg.per_corpus_weights``, ``cnn.stats_per_corpus_weights``); ``None`` or
            another corpus: the weights it gives an unseen corpus.

        Returns
        -------
        np.ndarray
            float32 ``[n, len(labels)]``, rows summing to 1; the most probable class is the model's.
        """
        return self.calibrate(self._model_probabilities(batch, groups, corpora))

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """The model's own probabilities ``[n, k]`` through :attr:`temperature` (unchanged when uncalibrated)."""
        return probabilities if self.temperature is None else apply_temperature(probabilities, self.temperature)

    def _model_probabilities(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None,
                             corpora: np.ndarray | None) -> np.ndarray:
        """The model's own (uncalibrated) probabilities ``[n, len(labels)]`` (see :meth:`predict_proba`)."""
        if isinstance(self.model, (Wav2Vec2Classifier, EmbeddingClassifier)):
            return self.model.predict_proba(batch)
        if isinstance(self.model, LogregModel):
            return self.model.predict_proba(self._stats(batch, groups), corpora)
        cnn = self.cnn_probabilities(batch)
        fused = self.fused_model
        return cnn if fused is None else fused.fuse(cnn, self._stats(batch, groups), corpora)

    @property
    def fused_model(self) -> FusedModel | None:
        """The CNN and its stats model as one :class:`FusedModel`, ``None`` without a stats model."""
        if self.stats_model is None:
            return None
        return FusedModel(self.model, self.stats_model, float(self.config["stats_fusion"]["weight"]))

    def cnn_probabilities(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The (uncalibrated) probabilities ``[n, len(labels)]`` of the bundle's CNN alone, for a CNN bundle."""
        cnn_inputs = tuple(self.model.architecture.inputs)
        features = model_input(batch, cnn_inputs)
        expected_rows = sum(self.model.architecture.input_rows)
        if features.shape[1] != expected_rows:
            raise UserError(
                f"the model takes {cnn_inputs} with {list(self.model.architecture.input_rows)} rows, "
                f"got {features.shape[1]} rows in total"
            )
        return self.cnn_predictor(features)

    def predict(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None = None) -> list[str]:
        """The most probable label per clip, ``[n]``."""
        return [self.labels[index] for index in self.predict_proba(batch, groups).argmax(axis=1)]

    @property
    def stats_inputs(self) -> tuple[str, ...]:
        """The feature columns side by side in the stats model's vector (``stats``, ``egemaps``), ``()`` without one."""
        return tuple(name for name in self.inputs if name in STATS_INPUTS)

    def stats_vector(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 ``[n, d]``: :attr:`stats_inputs` of ``batch`` side by side, as the stats model was trained on them."""
        return stats_vector(batch, self.stats_inputs)

    def _stats(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None) -> np.ndarray:
        """``batch``'s stats vectors ``[n, d]``, standardised per speaker if the model was trained so."""
        stats = self.stats_vector(batch)
        if not self.needs_speaker_groups:
            return stats
        if groups is None:
            raise UserError(
                f"the model bundle {self.path} standardises the stats of each speaker with that speaker's "
                "other clips, so it needs the speaker of every clip and several clips per speaker "
                "(jobs/evaluate.py groups a table's rows by corpus and speaker, jobs/score_calls.py takes each "
                "call channel as one speaker); it cannot score clips one by one: use a model trained with global "
                "normalisation (logreg.normalisation or cnn.stats_normalisation = \"global\", or cnn.stats_fusion_weight = 0)"
            )
        return speaker_standardise(stats, groups)

    def check_feature_config(self, other: FeatureConfig | Mapping[str, Any], *, source: str) -> None:
        """Refuse features computed with a different config than the model was trained on.

        Parameters
        ----------
        other
            The feature config of the table or of the scoring job.
        source
            What ``other`` describes, for the message (``"the features table at ..."``).
        """
        theirs = other if isinstance(other, FeatureConfig) else FeatureConfig.from_dict(other)
        if theirs.version() == self.feature_config.version():
            return
        differences = self.feature_config.describe_difference(theirs)
        raise UserError(
            f"the model bundle {self.path} was trained on features with config "
            f"{self.feature_config.version()}, but {source} uses config {theirs.version()} "
            f"(here = bundle, there = {source}: {'; '.join(differences)}); re-extract the features "
            f"with the bundle's feature config (in {self.path / CONFIG_FILE}) or use a bundle "
            "trained on features like these"
        )


def save_bundle(
    output_dir: str | Path,
    *,
    model: LogregModel | CnnModel | FusedModel | Wav2Vec2Classifier | EmbeddingClassifier,
    taxonomy: Taxonomy,
    labels: Sequence[str],
    feature_config: FeatureConfig,
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    stats_normalisation: StatsNormalisation = "global",
    stats_inputs: Sequence[str] = ("stats",),
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle directory (weights, metrics, then ``config.json``).

    Parameters
    ----------
    output_dir
        Directory to write (created; files of an earlier bundle there are replaced).
    model
        The fitted model.
    taxonomy, labels
        The taxonomy and the labels the model outputs, in column order.
    feature_config
        The feature config of the table the model was trained on.
    training
        JSON-serialisable facts about the training run (data summary, split, seed,
        hyper-parameters); stored under ``"training"``.
    metrics
        JSON-serialisable metrics, written to ``metrics.json``.
    stats_normalisation
        How the stats vectors of a logreg or fused stats model were normalised (``"speaker"``:
        per speaker, which prediction then repeats).
    stats_inputs
        The feature columns side by side in those vectors (:mod:`training.stats_inputs`); they
        follow the CNN's maps in ``inputs`` of ``config.json``.
    calibration
        ``{"method": "temperature", "temperature": T, ...}`` (:func:`training.protocol.bundle_calibration`),
        stored as ``calibration`` with its digest ``calibration_sha256``; ``None``: uncalibrated.
    """
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).unlink(missing_ok=True)
    config: dict[str, Any] = {
        "bundle_format": BUNDLE_FORMAT,
        "labels": list(labels),
        "taxonomy": taxonomy.to_dict(),
        "labels_sha256": labels_digest(list(labels), taxonomy.to_dict()),
        "feature_config": feature_config.to_dict(),
        "feature_config_version": feature_config.version(),
    }
    (path / STATS_MODEL_FILE).unlink(missing_ok=True)
    config.update(_save_model(path, model, stats_normalisation, tuple(stats_inputs)))
    if calibration is not None:
        config["calibration"] = dict(calibration)
        config["calibration_sha256"] = calibration_digest(calibration)
    config["training"] = dict(training)
    config["library_versions"] = library_versions()
    config["created_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(path / METRICS_FILE, metrics)
    config["weights_sha256"] = weight_digests(read_weight_files(path))
    write_json(path / CONFIG_FILE, config)
    logger.info("wrote model bundle %s", path)
    return path


def _save_model(
    path: Path, model: LogregModel | CnnModel | FusedModel | Wav2Vec2Classifier | EmbeddingClassifier,
    stats_normalisation: StatsNormalisation,
    stats_inputs: tuple[str, ...],
) -> dict[str, Any]:
    """Write ``model``'s weights; return its ``config.json`` entries (``model_kind``, ``inputs``, ``architecture``, ...)."""
    if isinstance(model, LogregModel):
        write_numpy_tensors(path / WEIGHTS_FILE, model.tensors())
        return {"model_kind": "logreg", "inputs": list(stats_inputs),
                "architecture": {"n_stats": model.n_stats, **_corpora_entry(model)},
                "stats_normalisation": stats_normalisation}
    if isinstance(model, (Wav2Vec2Classifier, EmbeddingClassifier)):
        return model.save_weights(path)
    cnn = model.cnn if isinstance(model, FusedModel) else model
    write_torch_tensors(path / WEIGHTS_FILE, cnn.state_dict())
    entries = {"model_kind": "cnn", "inputs": list(cnn.architecture.inputs), "architecture": to_dict(cnn.architecture)}
    if isinstance(model, FusedModel):
        write_numpy_tensors(path / STATS_MODEL_FILE, model.stats_model.tensors())
        entries["inputs"].extend(stats_inputs)
        entries.update(stats_fusion={"weight": model.weight, "n_stats": model.stats_model.n_stats,
                                     **_corpora_entry(model.stats_model)},
                       stats_normalisation=stats_normalisation)
    return entries


def _corpora_entry(model: LogregModel) -> dict[str, list[str]]:
    """``{"corpora": [...]}`` for a logistic regression with weights of each corpus's own, else ``{}``."""
    return {"corpora": list(model.corpora)} if model.corpora else {}


def _named_corpora(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """The ``corpora`` of a ``config.json`` entry (``architecture`` or ``stats_fusion``), checked."""
    corpora = entry.get("corpora", [])
    if not isinstance(corpora, list) or not all(isinstance(name, str) for name in corpora):
        raise UserError(f"model bundle {where}: {key}.corpora in {CONFIG_FILE} must list corpus names, got {corpora!r}")
    return tuple(corpora)


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory.

    Raises
    ------
    UserError
        For a missing directory or file, a bundle file that is not a regular file, unreadable
        JSON, an unknown bundle format or model kind, a feature config that does not match its
        recorded version, labels that are not its taxonomy's (in taxonomy order) or do not match
        their digest (``labels_sha256``), weights holding NaN or infinity, weights whose names or
        shapes do not fit the recorded architecture, weights changed since training
        (``weights_sha256`` in ``config.json``), or a calibration that is edited, invalid or
        missing where ``calibration_sha256`` declares one.

    A bundle without ``labels_sha256`` (written before it existed) loads with a warning, and so
    does one without calibration (it predicts uncalibrated probabilities); pickle files in the
    folder are never opened, and named in a warning.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model bundle {path} does not exist or is not a directory")
    missing = missing_required_files(path)
    holds = what_folder_holds(str(path)) if missing else None
    if holds and "model bundle" not in holds:
        raise UserError(f"{path} is {holds}, not a model bundle; give the --output folder of jobs/train.py")
    if missing:
        raise UserError(f"model bundle {path} is incomplete: {', '.join(missing)} missing; train it again")
    files = read_bundle_files(path)
    bundle = _build_bundle(files, where=path, config_where=path / CONFIG_FILE)
    if bundle.config.get("weights_sha256") != weight_digests(files):
        raise UserError(
            f"model bundle {path}: its *.safetensors files do not match the checksums in {CONFIG_FILE} "
            "(changed, added or removed after training); train it again"
        )
    if "labels_sha256" not in bundle.config:
        logger.warning(
            "model bundle %s has no labels digest (written before labels_sha256 existed): its labels %s were "
            "checked against its taxonomy only; train it again to have them covered by a digest",
            path, list(bundle.labels),
        )
    if bundle.temperature is None:
        logger.warning(
            "model bundle %s has no calibration (written before it existed): its probabilities are the model's "
            "own, uncalibrated; train it again to have calibrated confidence", path,
        )
    pickles = pickle_file_names(path)
    if pickles:
        logger.warning(
            "model bundle %s: ignoring %s: pickle files are never loaded (a bundle's model is its "
            "*.safetensors and config.json); delete them if they are not yours",
            path, ", ".join(pickles),
        )
    return bundle


def load_bundle_from_files(files: Mapping[str, bytes], *, source: str) -> Bundle:
    """The :class:`Bundle` that :func:`load_bundle` gave, rebuilt from its :attr:`Bundle.files`.

    Nothing is read from disk and the weight digests are not checked again (the driver that
    loaded the folder did); every other check runs.

    Parameters
    ----------
    files
        Bundle-relative name → bytes, as :attr:`Bundle.files` gives them.
    source
        Where the files came from, for messages (e.g. the bundle folder on the driver).
    """
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if name not in files]
    if missing:
        raise UserError(f"model bundle {source} is incomplete: {', '.join(missing)} missing; train it again")
    return _build_bundle(files, where=Path(source), config_where=f"{source}/{CONFIG_FILE}")


def _build_bundle(files: Mapping[str, bytes], *, where: Path, config_where: str | Path) -> Bundle:
    """Parse and check ``config.json``, then rebuild the model of its kind from ``files``."""
    config = parse_json(files[CONFIG_FILE], where=config_where)
    if config.get("bundle_format") != BUNDLE_FORMAT:
        raise UserError(
            f"model bundle {where} has format {config.get('bundle_format')!r}; this version reads format {BUNDLE_FORMAT}"
        )
    kind = config.get("model_kind")
    if kind not in MODEL_LOADERS:
        raise UserError(f"model bundle {where} has unknown model kind {kind!r}; known kinds: {list(MODEL_LOADERS)}")
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise UserError(f"model bundle {where}: 'labels' in {CONFIG_FILE} must list at least two label names")
    try:
        feature_config = FeatureConfig.from_dict(config.get("feature_config") or {})
        taxonomy = Taxonomy.from_dict(config.get("taxonomy") or {})
    except UserError as exc:
        raise UserError(f"model bundle {where}: {exc}") from None
    _check_labels(labels, taxonomy, config, where=where)
    _check_calibration(config, where=where)
    if feature_config.version() != config.get("feature_config_version"):
        raise UserError(
            f"model bundle {where}: its feature config hashes to {feature_config.version()}, not the recorded "
            f"{config.get('feature_config_version')!r}; the bundle was edited, train it again"
        )
    model, stats_model = MODEL_LOADERS[kind](files, config, len(labels), str(where))
    if config.get("stats_normalisation", "global") not in STATS_NORMALISATIONS:
        raise UserError(f"model bundle {where}: unknown stats_normalisation {config.get('stats_normalisation')!r}")
    return Bundle(where, config, model, stats_model, files=files)


def _check_labels(labels: list[str], taxonomy: Taxonomy, config: Mapping[str, Any], *, where: Path) -> None:
    """Refuse labels that are not the taxonomy's, in its order, or that differ from their digest.

    Training writes the taxonomy's labels that had rows, in taxonomy order (the model's output
    columns); ``labels_sha256`` (absent in bundles written before it existed) covers both lists.
    """
    foreign = [label for label in labels if label not in taxonomy.labels]
    if foreign:
        raise UserError(
            f"model bundle {where}: label {foreign[0]!r} is not a label of its taxonomy {taxonomy.name!r} "
            f"{list(taxonomy.labels)}; {CONFIG_FILE} was edited, train the bundle again"
        )
    in_order = [label for label in taxonomy.labels if label in labels]
    if labels != in_order:
        raise UserError(
            f"model bundle {where}: labels {labels} are not in the order of its taxonomy {taxonomy.name!r} "
            f"({in_order}), which is the order of the model's outputs; {CONFIG_FILE} was edited, train the bundle again"
        )
    recorded = config.get("labels_sha256")
    if recorded is not None and recorded != labels_digest(labels, config["taxonomy"]):
        raise UserError(
            f"model bundle {where}: its labels or taxonomy were edited after training (they do not match "
            f"labels_sha256 in {CONFIG_FILE}); train the bundle again"
        )


def _check_calibration(config: Mapping[str, Any], *, where: Path) -> None:
    """Refuse a calibration that is missing where ``calibration_sha256`` declares one, edited
    (not matching the digest), undeclared (no digest) or not a positive finite temperature."""
    calibration, recorded = config.get("calibration"), config.get("calibration_sha256")
    if calibration is None and recorded is None:
        return
    if calibration is None or recorded is None or not isinstance(calibration, dict):
        what = "calibration_sha256 but no calibration" if calibration is None else "a calibration without its digest"
        raise UserError(f"model bundle {where}: {CONFIG_FILE} has {what}; the bundle was edited, train it again")
    try:
        matches = recorded == calibration_digest(calibration)
    except (TypeError, ValueError):
        matches = False
    if not matches:
        raise UserError(
            f"model bundle {where}: its calibration was edited after training (it does not match "
            f"calibration_sha256 in {CONFIG_FILE}); train the bundle again"
        )
    temperatures = [calibration.get("temperature"), calibration.get("fallback_temperature", 1.0)]
    if calibration.get("method") != "temperature" or not all(
        isinstance(value, (int, float)) and np.isfinite(value) and value > 0 for value in temperatures
    ):
        raise UserError(
            f"model bundle {where}: its calibration must be a temperature scaling with a positive finite "
            f"temperature, got {calibration!r}; train the bundle again"
        )


def _load_logreg(
    files: Mapping[str, bytes], config: Mapping[str, Any], n_classes: int, where: str
) -> tuple[LogregModel, None]:
    inputs = config.get("inputs")
    if not isinstance(inputs, list) or not inputs or not set(inputs) <= set(STATS_INPUTS):
        raise UserError(f"model bundle {where}: a logistic regression reads {list(STATS_INPUTS)} (some of them), "
                        f"not the inputs {inputs!r} of its {CONFIG_FILE}")
    corpora = _named_corpora(config.get("architecture") or {}, "architecture", where)
    return _logreg_from_files(files, WEIGHTS_FILE, n_classes, where, corpora=corpora), None


def _logreg_from_files(files: Mapping[str, bytes], file_name: str, n_classes: int, where: str, *,
                       corpora: tuple[str, ...] = ()) -> LogregModel:
    if file_name not in files:
        raise UserError(f"model bundle {where}: cannot read {file_name} (missing)")
    tensors = read_numpy_tensors(files, file_name, where=where)
    try:
        return LogregModel.from_tensors(tensors, n_classes=n_classes, corpora=corpora)
    except UserError as exc:
        raise UserError(f"model bundle {where}: {exc}") from None


def _load_cnn(
    files: Mapping[str, bytes], config: Mapping[str, Any], n_classes: int, where: str
) -> tuple[CnnModel, LogregModel | None]:
    try:
        architecture = from_dict(CnnArchitecture, config.get("architecture") or {}, where="architecture")
    except (UserError, TypeError) as exc:
        raise UserError(f"model bundle {where}: bad CNN architecture in {CONFIG_FILE} ({exc})") from None
    if architecture.members < 1:
        raise UserError(f"model bundle {where}: architecture.members must be at least 1, got {architecture.members}")
    inputs = list(config.get("inputs", []))
    maps, fused_inputs = inputs[:len(architecture.inputs)], inputs[len(architecture.inputs):]
    # a fused model names its stats model's inputs after the maps; a CNN alone names none
    fusion_ok = (bool(fused_inputs) and set(fused_inputs) <= set(STATS_INPUTS)) if "stats_fusion" in config else not fused_inputs
    if architecture.n_classes != n_classes or maps != list(architecture.inputs) or not fusion_ok:
        raise UserError(f"model bundle {where}: the architecture does not match the labels or inputs in {CONFIG_FILE}")
    model = CnnEnsemble(architecture) if architecture.members > 1 else EmotionCnn(architecture)
    tensors = read_torch_tensors(files, where=where)
    check_tensor_shapes(state_shapes(model), tensors, where=where)
    model.load_state_dict(tensors)
    model.eval()
    if "stats_fusion" not in config:
        return model, None
    fusion = config["stats_fusion"]
    weight = fusion.get("weight") if isinstance(fusion, dict) else None
    if not isinstance(weight, (int, float)) or not 0 < weight < 1:
        raise UserError(f"model bundle {where}: stats_fusion.weight in {CONFIG_FILE} must lie in (0, 1), got {weight!r}")
    stats_model = _logreg_from_files(files, STATS_MODEL_FILE, n_classes, where,
                                     corpora=_named_corpora(fusion, "stats_fusion", where))
    return model, stats_model


def _transformer_loader(model_class: type[Wav2Vec2Classifier] | type[EmbeddingClassifier]) -> ModelLoader:
    """The loader of a transformer kind: the model rebuilds itself; outputs and sample rate are checked."""

    def load(files: Mapping[str, bytes], config: Mapping[str, Any], n_classes: int, where: str) -> tuple[Any, None]:
        model = model_class.from_bundle(files, config, where=where)
        if model.n_classes != n_classes:
            raise UserError(f"model bundle {where}: the model has {model.n_classes} outputs for {n_classes} labels")
        try:
            check_sample_rate(model.extractor, int(config["feature_config"]["audio"]["target_sample_rate_hz"]))
        except UserError as exc:
            raise UserError(f"model bundle {where}: {exc}") from None
        return model, None

    return load


#: ``model_kind`` → the function that rebuilds that kind's model from a bundle's files.
MODEL_LOADERS: dict[str, ModelLoader] = {
    "logreg": _load_logreg,
    "cnn": _load_cnn,
    "wav2vec2": _transformer_loader(Wav2Vec2Classifier),
    "embed-logreg": _transformer_loader(EmbeddingClassifier),
    "embed-mlp": _transformer_loader(EmbeddingClassifier),
}
