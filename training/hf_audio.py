"""Hugging Face audio encoders in this project: loading, label maps, bundle files, the training protocol.

**Loading.** ``--pretrained`` names a local directory in Hugging Face format (``config.json``,
weights, ``preprocessor_config.json``) or, on a machine that reaches a hub, a hub id. A local
directory is read with ``local_files_only=True``: nothing goes to the network. Any raw-waveform
encoder that ``AutoModel`` / ``AutoModelForAudioClassification`` know works (wav2vec2, HuBERT,
WavLM, data2vec-audio, UniSpeech, SEW).

**Label maps.** A checkpoint already fine-tuned for emotion names its classes in
``config.id2label`` (``ang``, ``Happiness``, ``fearful``, ...). Each name is normalised like a
corpus label (:func:`ser_udfs.corpora.normalise_label`) and mapped onto our taxonomy; our class
then starts from the checkpoint's row of the classification layer (an exact name match wins
over a merged one such as ``calm → neutral``). Our classes without a counterpart start fresh;
checkpoint classes outside the taxonomy are dropped. A checkpoint whose names map to nothing
(``LABEL_0``, ...) gets a fresh head.

**Bundle files.** A transformer bundle keeps everything that loading needs in the two files that
every bundle has: the weights in ``model.safetensors`` (Hugging Face tensor names, prefixed
``encoder.``/``head.`` for embedding models) and the Hugging Face model config and
feature-extractor config inside ``config.json`` (``architecture.hf_config``,
``architecture.feature_extractor``), so scoring, which ships those files to its workers, needs
nothing else. ``encoder/config.json`` and ``encoder/preprocessor_config.json`` hold the same two
configs in Hugging Face's own format, for people and tools.

**Training protocol.** :func:`cross_validate_and_save` runs a transformer model kind through the
same protocol as :func:`training.trainer.train_from_frame`: taxonomy, speaker-independent folds,
early stopping on held-out speakers of the training side, test figures on original clips,
refit, plots and bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ser_udfs.corpora import normalise_label
from ser_udfs.embeddings import check_sample_rate
from ser_udfs.errors import UserError
from ser_udfs.settings import to_dict

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from ser_udfs.feature_config import FeatureConfig
    from training.cnn import TrainingHistory
    from training.taxonomy import Taxonomy, TaxonomyReport
    from training.trainer import TrainingData

logger = logging.getLogger(__name__)

#: Folder of a bundle with the Hugging Face config files (for people and tools; loading uses config.json).
HF_FILES_DIR = "encoder"
WAVEFORM_INPUT = "waveform"
_LOCAL_PREFIXES = ("/", "./", "../", "~", "file:")


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class PretrainedSource:
    """Where a pretrained model comes from.

    Attributes
    ----------
    name_or_path
        What ``from_pretrained`` gets.
    local
        Whether it is a local directory (then nothing is fetched from the network).
    """

    name_or_path: str
    local: bool

    @classmethod
    def resolve(cls, spec: str) -> "PretrainedSource":
        """A local directory if ``spec`` is one; a hub id unless it looks like a path that does not exist."""
        if not spec:
            raise UserError("no pretrained model given: pass --pretrained PATH (a local Hugging Face model folder)")
        path = Path(spec[len("file:"):] if spec.startswith("file:") else spec).expanduser()
        if path.is_dir():
            return cls(str(path), True)
        if spec.startswith(_LOCAL_PREFIXES) or path.exists():
            raise UserError(f"pretrained model {spec} is not a directory; give a Hugging Face model folder")
        return cls(spec, False)

    def load(self, loader: Callable[..., Any], **kwargs: Any) -> Any:
        """``loader(name_or_path, local_files_only=..., **kwargs)`` with failures as one clear sentence."""
        _quiet_transformers()
        try:
            return loader(self.name_or_path, local_files_only=self.local, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            where = "the folder" if self.local else "the hub id (this machine may not reach a hub)"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"cannot load a Hugging Face audio model from {self.name_or_path}: {first_line}; check {where}"
            ) from None


def load_feature_extractor(source: PretrainedSource) -> Any:
    """The checkpoint's feature extractor, or wav2vec2's defaults when it has none (logged)."""
    from transformers import AutoConfig, AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    try:
        return source.load(AutoFeatureExtractor.from_pretrained)
    except UserError:
        config = source.load(AutoConfig.from_pretrained)
        with_mask = getattr(config, "feat_extract_norm", "group") == "layer"
        logger.warning(
            "%s has no feature-extractor config; using Wav2Vec2FeatureExtractor defaults "
            "(16 kHz, normalised, attention mask %s)", source.name_or_path, with_mask,
        )
        return Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=with_mask)


@dataclass
class Encoder:
    """A loaded audio encoder (``AutoModel``) with its feature extractor."""

    model: Any
    extractor: Any
    source: PretrainedSource


def load_encoder(spec: str, *, device: "torch.device | str" = "cpu") -> Encoder:
    """Load the encoder part of any checkpoint (a classification head, if any, is left out)."""
    from transformers import AutoModel

    source = PretrainedSource.resolve(spec)
    extractor = load_feature_extractor(source)
    model = source.load(AutoModel.from_pretrained)
    _check_encoder(model, source.name_or_path)
    model.to(device).eval()
    logger.info("loaded encoder %s (%s, %d layers, hidden %d)", source.name_or_path, model.config.model_type,
                model.config.num_hidden_layers, model.config.hidden_size)
    return Encoder(model, extractor, source)


def checkpoint_label_sources(id2label: Mapping[Any, str], labels: Sequence[str], taxonomy: "Taxonomy") -> list[int | None]:
    """For each of our ``labels``, the checkpoint class whose row initialises it (or ``None``).

    Parameters
    ----------
    id2label
        The checkpoint's ``config.id2label`` (keys may be ints or digit strings).
    labels
        Our classes, in output order.
    taxonomy
        Maps canonical labels onto ours (``calm → neutral`` in ``core6``).
    """
    exact: dict[str, int] = {}
    merged: dict[str, int] = {}
    for key, name in sorted(((int(k), v) for k, v in id2label.items())):
        try:
            canonical = normalise_label(str(name))
        except ValueError:
            continue
        target = taxonomy.target(canonical)
        if target is None:
            continue
        (exact if canonical == target else merged).setdefault(target, key)
    return [exact.get(label, merged.get(label)) for label in labels]


def load_classifier(
    spec: str,
    labels: Sequence[str],
    taxonomy: "Taxonomy",
    *,
    config_overrides: Mapping[str, Any],
    new_head_overrides: Mapping[str, Any],
) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``AutoModelForAudioClassification`` for our ``labels``, reusing a checkpoint's emotion head.

    Parameters
    ----------
    config_overrides
        Model config values to set when they exist for this architecture (``mask_time_prob``,
        ``layerdrop``).
    new_head_overrides
        Config values that shape a new head (``classifier_proj_size``,
        ``use_weighted_layer_sum``); ignored when the checkpoint's head is reused.

    Returns
    -------
    (model, extractor, label_report)
        The model (on the CPU, train mode off), its extractor, and how the checkpoint's labels
        were used: ``{"checkpoint_labels", "initialised_from", "new", "dropped"}``.
    """
    from transformers import AutoConfig, AutoModelForAudioClassification

    source = PretrainedSource.resolve(spec)
    extractor = load_feature_extractor(source)
    config = source.load(AutoConfig.from_pretrained)
    checkpoint_labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    sources = checkpoint_label_sources(checkpoint_labels, labels, taxonomy)
    reuse_head = any(index is not None for index in sources) and _has_classification_head(config)
    for key, value in config_overrides.items():
        if hasattr(config, key):
            setattr(config, key, value)
    if not reuse_head:
        for key, value in new_head_overrides.items():
            if hasattr(config, key):
                setattr(config, key, value)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
    model = source.load(AutoModelForAudioClassification.from_pretrained, config=config, ignore_mismatched_sizes=True)
    _check_encoder(model, source.name_or_path)
    if reuse_head:
        _remap_head(model, sources, labels)
    else:
        sources = [None] * len(labels)
    used = {labels[i]: checkpoint_labels[index] for i, index in enumerate(sources) if index is not None}
    report = {
        "checkpoint_labels": [checkpoint_labels[k] for k in sorted(checkpoint_labels)],
        "initialised_from": used,
        "new": [label for label, index in zip(labels, sources) if index is None],
        "dropped": sorted(set(checkpoint_labels.values()) - set(used.values())) if reuse_head else [],
    }
    if reuse_head:
        logger.info("classification head of %s reused: %s; new classes %s; dropped %s",
                    source.name_or_path, used, report["new"], report["dropped"])
    return model.eval(), extractor, report


def _has_classification_head(config: Any) -> bool:
    return any(name.endswith(("ForSequenceClassification", "ForAudioClassification"))
               for name in (getattr(config, "architectures", None) or []))


def _remap_head(model: Any, sources: Sequence[int | None], labels: Sequence[str]) -> None:
    """Replace the classification layer by one with a row per label, copied where ``sources`` says."""
    import torch
    from torch import nn

    name, layer = classification_layer(model)
    new = nn.Linear(layer.in_features, len(labels), bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.normal_(0.0, float(getattr(model.config, "initializer_range", 0.02)))
        if new.bias is not None:
            new.bias.zero_()
        for row, source in enumerate(sources):
            if source is not None:
                new.weight[row] = layer.weight[source]
                if new.bias is not None:
                    new.bias[row] = layer.bias[source]
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, new)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: index for index, label in enumerate(labels)}


def classification_layer(model: Any) -> tuple[str, Any]:
    """The (last) linear layer whose outputs are the model's classes: ``(name, module)``."""
    from torch import nn

    n_labels = len(model.config.id2label)
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == n_labels and "classifier" in name]
    if not found:
        raise UserError(f"cannot find the classification layer of {type(model).__name__} to map its labels")
    return found[-1]


def _check_encoder(model: Any, name: str) -> None:
    config = model.config
    if not all(hasattr(config, key) for key in ("hidden_size", "num_hidden_layers")):
        raise UserError(f"{name} ({type(model).__name__}) is not a speech encoder with hidden states")
    if not hasattr(config, "conv_kernel"):
        raise UserError(
            f"{name} is a {config.model_type} model; only raw-waveform encoders (wav2vec2, HuBERT, WavLM, "
            "data2vec-audio, UniSpeech, SEW) are supported"
        )


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# --------------------------------------------------------------------------------------------
# Bundle files


def hf_architecture(model_config: Any, extractor: Any) -> dict[str, Any]:
    """``{"hf_config", "feature_extractor"}`` for a bundle's ``config.json``."""
    return {"hf_config": model_config.to_dict(), "feature_extractor": extractor.to_dict()}


def write_hf_files(path: Path, model_config: Any, extractor: Any) -> None:
    """``encoder/config.json`` and ``encoder/preprocessor_config.json`` in Hugging Face's format."""
    folder = Path(path) / HF_FILES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    model_config.to_json_file(str(folder / "config.json"))
    extractor.to_json_file(str(folder / "preprocessor_config.json"))


def config_from_dict(data: Mapping[str, Any], *, where: Path) -> Any:
    """A Hugging Face model config from :func:`hf_architecture`'s ``hf_config``."""
    from transformers import AutoConfig

    values = dict(data)
    model_type = values.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"model bundle {where}: bad Hugging Face config in config.json ({exc})") from None


def extractor_from_dict(data: Mapping[str, Any], *, where: Path) -> Any:
    """A feature extractor from :func:`hf_architecture`'s ``feature_extractor``."""
    import transformers
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    name = str(data.get("feature_extractor_type", ""))
    cls = getattr(transformers, name, None) if name.endswith("FeatureExtractor") else None
    if not (isinstance(cls, type) and issubclass(cls, FeatureExtractionMixin)):
        raise UserError(f"model bundle {where}: unknown feature extractor type {name!r} in config.json")
    return cls.from_dict(dict(data))


def model_from_state(factory: Callable[[], Any], tensors: Mapping[str, "torch.Tensor"], *, where: Path) -> Any:
    """Build a module with ``factory()`` on the meta device and give it ``tensors``, checked.

    Raises
    ------
    UserError
        When tensor names or shapes do not match the architecture.
    """
    import torch

    with torch.device("meta"):
        model = factory()
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if set(expected) != set(found):
        raise UserError(
            f"model bundle {where}: model.safetensors lacks tensors {sorted(set(expected) - set(found))[:5]} "
            f"and has unexpected {sorted(set(found) - set(expected))[:5]}"
        )
    wrong = [f"{name} {list(found[name])} (expected {list(shape)})" for name, shape in expected.items() if found[name] != shape]
    if wrong:
        raise UserError(f"model bundle {where}: tensors with wrong shapes: {', '.join(wrong[:5])}")
    model.load_state_dict(dict(tensors), strict=True, assign=True)
    leftover = [name for name, value in [*model.named_parameters(), *model.named_buffers()] if value.is_meta]
    if leftover:
        with torch.device("cpu"):
            model = factory()
        model.load_state_dict(dict(tensors), strict=True)
    return model.eval()


def read_weights(path: Path) -> dict[str, "torch.Tensor"]:
    """The tensors of a bundle's ``model.safetensors``."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise UserError(f"model bundle {path}: cannot read model.safetensors ({exc})") from None


def write_weights(path: Path, tensors: Mapping[str, "torch.Tensor"]) -> None:
    """Write tensors (moved to the CPU, contiguous, storage not shared) to ``model.safetensors``."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    ready = {}
    for name, tensor in tensors.items():
        data = tensor.detach().to("cpu").contiguous()
        pointer = data.untyped_storage().data_ptr()
        ready[name] = data.clone() if pointer in seen else data
        seen.add(pointer)
    save_file(ready, str(Path(path) / "model.safetensors"))


def load_transformer_model(path: Path, config: Mapping[str, Any], n_classes: int) -> Any:
    """The predictor of a transformer bundle (what :func:`training.bundle.load_bundle` calls)."""
    if config.get("model_kind") == "wav2vec2":
        from training.wav2vec2_finetune import Wav2Vec2Classifier

        model = Wav2Vec2Classifier.from_bundle(path, config)
    else:
        from training.embedding_head import EmbeddingClassifier

        model = EmbeddingClassifier.from_bundle(path, config)
    if model.n_classes != n_classes:
        raise UserError(f"model bundle {path}: the model has {model.n_classes} outputs for {n_classes} labels")
    try:
        check_sample_rate(model.extractor, int(config["feature_config"]["audio"]["target_sample_rate_hz"]))
    except UserError as exc:
        raise UserError(f"model bundle {path}: {exc}") from None
    return model


# --------------------------------------------------------------------------------------------
# Training protocol shared by the transformer model kinds

#: ``fit(rows, seed=, log_prefix=, epochs=)`` → ``(fold model, history or None)``: trains on
#: ``rows`` (early-stopping on held-out speakers when ``epochs`` is None).
FitFunction = Callable[..., tuple[Any, "TrainingHistory | None"]]


def map_labels(frame: "pd.DataFrame", taxonomy: "Taxonomy") -> tuple["pd.DataFrame", list[str], "TaxonomyReport"]:
    """Rows mapped onto ``taxonomy`` and the labels that have rows (at least two)."""
    from training.taxonomy import apply_taxonomy

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


def table_waveforms(frame: "pd.DataFrame", table_config: "FeatureConfig", extractor: Any) -> np.ndarray:
    """float32 ``[n, clip_samples]`` waveforms of features rows, checked against the encoder's rate."""
    from training.dataset import feature_batch

    if WAVEFORM_INPUT not in frame.columns or frame[WAVEFORM_INPUT].isna().any():
        raise UserError(
            "the features table has no waveforms (or not for every row), which transformer models need; "
            "re-run the extraction with --set output.keep_waveform=true"
        )
    check_sample_rate(extractor, table_config.audio.target_sample_rate_hz)
    return feature_batch(frame, [WAVEFORM_INPUT])[WAVEFORM_INPUT]


def validation_rows(
    data: "TrainingData", rows: np.ndarray, *, method: str, fraction: float, seed: int, log_prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split training ``rows`` into rows to fit and original clips of held-out speakers to early-stop on."""
    from training.splits import holdout_split

    inner = holdout_split(data.frame.iloc[rows], method, test_fraction=fraction, seed=seed)
    train, validation = rows[inner.train_index], rows[inner.test_index]
    validation = validation[data.is_original[validation]]
    logger.info("%strain on %d rows, early-stop on %d original clips of held-out %s", log_prefix, len(train),
                len(validation), "speakers" if method == "speaker" else "clips")
    return train, validation


def cross_validate_and_save(
    data: "TrainingData",
    report: "TaxonomyReport",
    config: Any,
    *,
    taxonomy: "Taxonomy",
    table_config: "FeatureConfig",
    output_dir: str | Path,
    fit: FitFunction,
    predict: Callable[[Any, np.ndarray], np.ndarray],
    bundle_model: Callable[[Any], Any],
    training_facts: Mapping[str, Any],
) -> dict[str, Any]:
    """Folds, test figures, refit, plots and bundle, as :func:`training.trainer.train_from_frame` does.

    Parameters
    ----------
    data
        Taxonomy-mapped rows with their model inputs and class indices.
    config
        Has ``model``, ``taxonomy``, ``seed``, ``split`` and ``model_settings()``.
    fit
        See :data:`FitFunction`.
    predict
        ``predict(fold_model, rows)`` → probabilities ``[len(rows), n_labels]``.
    bundle_model
        Turns the final fold model into the bundle's predictor (with ``save_weights``).
    training_facts
        Extra entries of the bundle's ``training`` record (encoder, label map, throughput).

    Returns
    -------
    dict
        ``{"bundle_dir", "model", "taxonomy", "labels", "split", "metrics"}`` like ``train_from_frame``.
    """
    from training.bundle import save_bundle
    from training.metrics import classification_metrics, format_headline
    from training.plots import plot_confusion_matrix, plot_training_curves
    from training.splits import make_splits
    from training.trainer import CONFUSION_PLOT, CURVES_PLOT, data_summary, metrics_report

    splits = make_splits(data.frame, config.split, seed=config.seed)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    fold_results, histories, kept = [], [], None
    for number, split in enumerate(splits):
        model, history = fit(split.train_index, seed=config.seed + number, log_prefix=f"{split.name}: ", epochs=None)
        rows = split.test_index[data.is_original[split.test_index]]
        predicted = predict(model, rows).argmax(axis=1)
        fold_results.append({
            "rows": rows,
            "predicted": predicted,
            "metrics": classification_metrics(data.targets[rows], predicted, data.labels),
            **split.summary(data.frame),
            "test_rows_scored": int(len(rows)),
        })
        if history is not None:
            histories.append((split.name, history))
        logger.info("%s: %s", split.name, format_headline(fold_results[-1]["metrics"]))
        kept = model if len(splits) == 1 else None
        del model
        release_accelerator_memory()

    metrics = metrics_report(data, config, taxonomy, splits, fold_results)
    if len(splits) > 1:
        epochs = int(round(float(np.median([h.best_epoch for _, h in histories])))) if histories else None
        kept, final_history = fit(np.arange(len(data.frame)), seed=config.seed + len(splits),
                                  log_prefix="final fit: ", epochs=epochs)
        if final_history is not None:
            histories.append(("final", final_history))
        final_note = f"refit on all {len(data.frame)} rows after cross-validation" + (
            f" for {epochs} epochs (median best epoch over folds)" if epochs else ""
        )
    else:
        final_note = "the model tested on the holdout split"
    metrics["final_model"] = final_note

    pooled = metrics["pooled"]["confusion_matrix"]
    plot_confusion_matrix(
        np.array(pooled["matrix"]), pooled["labels"], output / CONFUSION_PLOT,
        title=f"{config.model}, {taxonomy.name}: {config.split.describe()}\n{format_headline(metrics['summary'])}",
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
        **training_facts,
    }
    save_bundle(output, model=bundle_model(kept), taxonomy=taxonomy, labels=data.labels, feature_config=table_config,
                training=training, metrics=metrics)
    logger.info("%s on %s, %s: %s", config.model, taxonomy.name, config.split.describe(), format_headline(metrics["summary"]))
    return {
        "bundle_dir": str(output),
        "model": config.model,
        "taxonomy": taxonomy.name,
        "labels": data.labels,
        "split": config.split.describe(),
        "metrics": {name: metrics["summary"][name] for name in ("accuracy", "ua", "macro_f1")},
    }


def release_accelerator_memory() -> None:
    """Return cached GPU memory after a fold's model is dropped (no-op without a GPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
