"""Model bundles: a directory with weights, config, metrics and plots, and the predictor API.

Layout::

    BUNDLE/config.json          model kind, labels, taxonomy, inputs, architecture, the exact
                                feature config and its version, training data summary, split,
                                seed, hyper-parameters, library versions
    BUNDLE/model.safetensors    weights (CNN state dict, an ensemble's members under ``members.K.``;
                                logreg scaler mean/scale, coef, intercept)
    BUNDLE/stats_model.safetensors  a CNN's fused stats model (``cnn.stats_fusion_weight > 0``):
                                logreg tensors; ``stats_fusion`` in ``config.json`` holds its weight
    BUNDLE/metrics.json         test metrics (per fold and mean ± std for cross-validation)
    BUNDLE/*.png                confusion matrix, training curves

No pickle anywhere: weights are safetensors, everything else is JSON. ``config.json`` is
written last, so a bundle whose writing was interrupted is refused on loading.

:func:`load_bundle` verifies a bundle (files present, known model kind, feature config
consistent with its version, tensor names and shapes matching the architecture) and returns a
:class:`Bundle` whose :meth:`Bundle.predict_proba` takes feature arrays as the project's
feature code computes them, so scoring can feed fresh features without Spark. A model that
standardises stats per speaker (``stats_normalisation = "speaker"`` in ``config.json``) also
needs each row's speaker (``groups``) and several clips per speaker.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ser_udfs.errors import UserError
from ser_udfs.feature_config import FeatureConfig
from ser_udfs.settings import from_dict, to_dict
from training.cnn import CnnArchitecture, CnnEnsemble, CnnModel, EmotionCnn, model_input
from training.cnn import predict_proba as cnn_predict_proba
from training.fusion import FusedModel
from training.logreg import LogregModel
from training.speaker_norm import STATS_NORMALISATIONS, StatsNormalisation, speaker_standardise
from training.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.safetensors"
STATS_MODEL_FILE = "stats_model.safetensors"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE)
# Transformer kinds (training.hf_audio) keep a Hugging Face encoder; their model writes and reads its own weights.
TRANSFORMER_KINDS = ("wav2vec2", "embed-logreg", "embed-mlp")
MODEL_KINDS = ("logreg", "cnn", *TRANSFORMER_KINDS)
VERSIONED_LIBRARIES = (
    "numpy", "pandas", "scikit-learn", "torch", "safetensors", "pyarrow", "audiomentations", "transformers",
)


class Bundle:
    """A loaded, verified model bundle: the uniform predictor used by evaluation and scoring.

    Attributes
    ----------
    path
        The bundle directory.
    config
        The parsed ``config.json``.
    model
        :class:`~training.logreg.LogregModel`, :class:`~training.cnn.EmotionCnn` or
        :class:`~training.cnn.CnnEnsemble`.
    stats_model
        A CNN's fused stats model (:mod:`training.fusion`), else ``None``.
    """

    def __init__(
        self, path: Path, config: dict[str, Any], model: LogregModel | CnnModel, stats_model: LogregModel | None = None
    ) -> None:
        self.path = path
        self.config = config
        self.model = model
        self.stats_model = stats_model
        self.feature_config = FeatureConfig.from_dict(config["feature_config"])
        self.taxonomy = Taxonomy.from_dict(config["taxonomy"])

    @property
    def model_kind(self) -> str:
        """``logreg`` or ``cnn``."""
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
    def needs_speaker_groups(self) -> bool:
        """Whether :meth:`predict_proba` needs each row's speaker (stats standardised per speaker)."""
        return self.config.get("stats_normalisation") == "speaker"

    def predict_proba(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities for a batch of clips.

        Parameters
        ----------
        batch
            Feature arrays as the feature code computes them: ``{"log_mel": [n, n_mels,
            frames], "mfcc": [n, c, frames], "stats": [n, d]}``; only :attr:`inputs` are used.
        groups
            ``[n]`` speaker key per clip; required when :attr:`needs_speaker_groups`, and then the
            batch must hold all the clips of each of its speakers.

        Returns
        -------
        np.ndarray
            float32 ``[n, len(labels)]``, rows summing to 1.
        """
        if self.model_kind in TRANSFORMER_KINDS:
            return self.model.predict_proba(batch)
        if isinstance(self.model, LogregModel):
            return self.model.predict_proba(self._stats(batch, groups))
        cnn_inputs = tuple(name for name in self.inputs if name != "stats")
        features = model_input(batch, cnn_inputs)
        expected_rows = sum(self.model.architecture.input_rows)
        if features.shape[1] != expected_rows:
            raise UserError(
                f"the model takes {cnn_inputs} with {list(self.model.architecture.input_rows)} rows, "
                f"got {features.shape[1]} rows in total"
            )
        if self.stats_model is None:
            return cnn_predict_proba(self.model, features)
        fused = FusedModel(self.model, self.stats_model, float(self.config["stats_fusion"]["weight"]))
        return fused.predict_proba(features, self._stats(batch, groups))

    def predict(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None = None) -> list[str]:
        """The most probable label per clip, ``[n]``."""
        return [self.labels[index] for index in self.predict_proba(batch, groups).argmax(axis=1)]

    def _stats(self, batch: Mapping[str, np.ndarray], groups: np.ndarray | None) -> np.ndarray:
        """``batch``'s stats vectors ``[n, d]``, standardised per speaker if the model was trained so."""
        if "stats" not in batch:
            raise UserError("the model needs the 'stats' feature, which the input does not have")
        if not self.needs_speaker_groups:
            return batch["stats"]
        if groups is None:
            raise UserError(
                f"the model bundle {self.path} standardises the stats of each speaker with that speaker's "
                "other clips, so it needs the speaker of every clip and several clips per speaker "
                "(jobs/evaluate.py groups a table's rows by corpus and speaker); it cannot score clips or "
                "call windows one by one: use a model trained with global normalisation "
                "(logreg.normalisation or cnn.stats_normalisation = \"global\", or cnn.stats_fusion_weight = 0)"
            )
        return speaker_standardise(batch["stats"], groups)

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
    model: LogregModel | CnnModel | FusedModel,
    taxonomy: Taxonomy,
    labels: Sequence[str],
    feature_config: FeatureConfig,
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    stats_normalisation: StatsNormalisation = "global",
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
    """
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).unlink(missing_ok=True)
    config: dict[str, Any] = {
        "bundle_format": BUNDLE_FORMAT,
        "labels": list(labels),
        "taxonomy": taxonomy.to_dict(),
        "feature_config": feature_config.to_dict(),
        "feature_config_version": feature_config.version(),
    }
    (path / STATS_MODEL_FILE).unlink(missing_ok=True)
    if isinstance(model, LogregModel):
        save_numpy({name: np.ascontiguousarray(array) for name, array in model.tensors().items()}, path / WEIGHTS_FILE)
        config.update(model_kind="logreg", inputs=["stats"], architecture={"n_stats": model.n_stats},
                      stats_normalisation=stats_normalisation)
    elif hasattr(model, "save_weights"):  # transformer models: weights, model_kind, inputs, architecture
        config.update(model.save_weights(path))
    else:
        cnn = model.cnn if isinstance(model, FusedModel) else model
        state = {name: tensor.detach().contiguous() for name, tensor in cnn.state_dict().items()}
        save_torch(state, str(path / WEIGHTS_FILE))
        config.update(model_kind="cnn", inputs=list(cnn.architecture.inputs), architecture=to_dict(cnn.architecture))
        if isinstance(model, FusedModel):
            tensors = model.stats_model.tensors()
            save_numpy({name: np.ascontiguousarray(array) for name, array in tensors.items()}, path / STATS_MODEL_FILE)
            config["inputs"].append("stats")
            config.update(stats_fusion={"weight": model.weight, "n_stats": model.stats_model.n_stats},
                          stats_normalisation=stats_normalisation)
    config["training"] = dict(training)
    config["library_versions"] = library_versions()
    config["created_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _write_json(path / METRICS_FILE, metrics)
    config["weights_sha256"] = _weight_digests(path)
    _write_json(path / CONFIG_FILE, config)
    logger.info("wrote model bundle %s", path)
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory.

    Raises
    ------
    UserError
        For a missing directory or file, unreadable JSON, an unknown bundle format or model
        kind, a feature config that does not match its recorded version, or weights whose
        names or shapes do not fit the recorded architecture, or weights changed since training
        (``weights_sha256`` in ``config.json``).
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model bundle {path} does not exist or is not a directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(f"model bundle {path} is incomplete: {', '.join(missing)} missing; train it again")
    config = _read_json(path / CONFIG_FILE)
    if config.get("bundle_format") != BUNDLE_FORMAT:
        raise UserError(
            f"model bundle {path} has format {config.get('bundle_format')!r}; this version reads format {BUNDLE_FORMAT}"
        )
    kind = config.get("model_kind")
    if kind not in MODEL_KINDS:
        raise UserError(f"model bundle {path} has unknown model kind {kind!r}; known kinds: {list(MODEL_KINDS)}")
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise UserError(f"model bundle {path}: 'labels' in {CONFIG_FILE} must list at least two label names")
    try:
        feature_config = FeatureConfig.from_dict(config.get("feature_config") or {})
        Taxonomy.from_dict(config.get("taxonomy") or {})
    except UserError as exc:
        raise UserError(f"model bundle {path}: {exc}") from None
    if feature_config.version() != config.get("feature_config_version"):
        raise UserError(
            f"model bundle {path}: its feature config hashes to {feature_config.version()}, not the recorded "
            f"{config.get('feature_config_version')!r}; the bundle was edited, train it again"
        )
    if kind in TRANSFORMER_KINDS:
        from training.hf_audio import load_transformer_model

        model = load_transformer_model(path, config, len(labels))
    else:
        model = _load_logreg(path, len(labels)) if kind == "logreg" else _load_cnn(path, config, len(labels))
    stats_model = None
    if kind == "cnn" and "stats_fusion" in config:
        stats_model = _load_logreg(path, len(labels), STATS_MODEL_FILE)
        fusion = config["stats_fusion"]
        weight = fusion.get("weight") if isinstance(fusion, dict) else None
        if not isinstance(weight, (int, float)) or not 0 < weight < 1:
            raise UserError(f"model bundle {path}: stats_fusion.weight in {CONFIG_FILE} must lie in (0, 1), got {weight!r}")
    if config.get("stats_normalisation", "global") not in STATS_NORMALISATIONS:
        raise UserError(f"model bundle {path}: unknown stats_normalisation {config.get('stats_normalisation')!r}")
    if config.get("weights_sha256") != _weight_digests(path):
        raise UserError(
            f"model bundle {path}: its *.safetensors files do not match the checksums in {CONFIG_FILE} "
            "(changed, added or removed after training); train it again"
        )
    return Bundle(path, config, model, stats_model)


def _load_logreg(path: Path, n_classes: int, file_name: str = WEIGHTS_FILE) -> LogregModel:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path / file_name)
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise UserError(f"model bundle {path}: cannot read {file_name} ({exc})") from None
    try:
        return LogregModel.from_tensors(tensors, n_classes=n_classes)
    except UserError as exc:
        raise UserError(f"model bundle {path}: {exc}") from None


def _load_cnn(path: Path, config: Mapping[str, Any], n_classes: int) -> CnnModel:
    from safetensors.torch import load_file

    try:
        architecture = from_dict(CnnArchitecture, config.get("architecture") or {}, where="architecture")
    except (UserError, TypeError) as exc:
        raise UserError(f"model bundle {path}: bad CNN architecture in {CONFIG_FILE} ({exc})") from None
    if architecture.members < 1:
        raise UserError(f"model bundle {path}: architecture.members must be at least 1, got {architecture.members}")
    fused_inputs = ["stats"] if "stats_fusion" in config else []
    if architecture.n_classes != n_classes or [*architecture.inputs, *fused_inputs] != list(config.get("inputs", [])):
        raise UserError(f"model bundle {path}: the architecture does not match the labels or inputs in {CONFIG_FILE}")
    model = CnnEnsemble(architecture) if architecture.members > 1 else EmotionCnn(architecture)
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise UserError(f"model bundle {path}: cannot read {WEIGHTS_FILE} ({exc})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if set(expected) != set(found):
        raise UserError(
            f"model bundle {path}: {WEIGHTS_FILE} lacks tensors {sorted(set(expected) - set(found))[:5]} "
            f"and has unexpected {sorted(set(found) - set(expected))[:5]}"
        )
    wrong = [f"{name} {list(found[name])} (expected {list(shape)})" for name, shape in expected.items() if found[name] != shape]
    if wrong:
        raise UserError(f"model bundle {path}: tensors with wrong shapes: {', '.join(wrong[:5])}")
    model.load_state_dict(tensors)
    model.eval()
    return model


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide a model's numbers."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _weight_digests(path: Path) -> dict[str, str]:
    """SHA-256 of every ``*.safetensors`` file in the bundle, by bundle-relative name."""
    digests = {}
    for weights in sorted(path.rglob("*.safetensors")):
        with weights.open("rb") as handle:
            digests[weights.relative_to(path).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc}); the bundle is damaged, train it again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; the bundle is damaged, train it again")
    return data
