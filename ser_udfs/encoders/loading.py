"""Loading Hugging Face audio encoders from a local folder (or, where a hub is reachable, a hub id).

``--pretrained`` names a local directory in Hugging Face format (``config.json``, weights,
``preprocessor_config.json``) or, on a machine that reaches a hub, a hub id. A local directory
is read with ``local_files_only=True``: nothing goes to the network. Any raw-waveform encoder
that ``AutoModel`` / ``AutoModelForAudioClassification`` know works (wav2vec2, HuBERT, WavLM,
data2vec-audio, UniSpeech, SEW).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_LOCAL_PREFIXES = ("/", "./", "../", "~", "file:")


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
    check_encoder(model, source.name_or_path)
    model.to(device).eval()
    logger.info("loaded encoder %s (%s, %d layers, hidden %d)", source.name_or_path, model.config.model_type,
                model.config.num_hidden_layers, model.config.hidden_size)
    return Encoder(model, extractor, source)


def check_encoder(model: Any, name: str) -> None:
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

