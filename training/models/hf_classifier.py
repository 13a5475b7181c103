"""A checkpoint's classification model with its label map: our labels onto its emotion head.

A checkpoint already fine-tuned for emotion names its classes in ``config.id2label`` (``ang``,
``Happiness``, ``fearful``, ...). Each name is normalised like a corpus label
(:func:`ser_udfs.corpora.normalise_label`) and mapped onto our taxonomy; our class then starts
from the checkpoint's row of the classification layer (an exact name match wins over a merged
one such as ``calm → neutral``). Our classes without a counterpart start fresh; checkpoint
classes outside the taxonomy are dropped. A checkpoint whose names map to nothing
(``LABEL_0``, ...) gets a fresh head. Loading itself (local folders offline, hub ids) is
:mod:`ser_udfs.encoders.loading`'s.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from ser_udfs.corpora import normalise_label
from ser_udfs.encoders.loading import PretrainedSource, check_encoder, load_feature_extractor
from ser_udfs.errors import UserError
from training.taxonomy import Taxonomy

logger = logging.getLogger(__name__)


def checkpoint_label_sources(id2label: Mapping[Any, str], labels: Sequence[str], taxonomy: Taxonomy) -> list[int | None]:
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
    taxonomy: Taxonomy,
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
    check_encoder(model, source.name_or_path)
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
