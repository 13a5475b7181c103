"""Model bundles made ready for scoring: fast CPU inference, and the factory the workers call.

The Spark scoring wrapper (:mod:`ser_udfs.spark.score`) does not know what a model is: like
``pyspark.ml.functions.predict_batch_udf`` it takes a zero-argument factory made on the driver
and asks the per-worker cache (:func:`ser_udfs.spark.model_cache.cached_model`) for its result.
:class:`ScoringModelFactory` is that factory for a model bundle: it holds a broadcast of the
bundle's files (:attr:`training.bundle.load.Bundle.files`, read once when the driver loaded and
verified the bundle) and rebuilds the bundle from those bytes in the worker, without disk and
without verifying it again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ser_udfs.errors import UserError
from training.bundle.format import CONFIG_FILE
from training.bundle.load import Bundle, load_bundle, load_bundle_from_files
from training.calibration import apply_temperature
from training.models.cnn import networks
from training.models.cnn_onnx import CnnPredictor, CnnRuntime
from training.speaker_norm import speaker_standardise

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


def fold_batch_norms(blocks: "torch.nn.Sequential") -> None:
    """Fold every ``BatchNorm2d`` that follows a ``Conv2d`` in ``blocks`` into it, in place (eval mode)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    blocks.eval()
    for index in range(len(blocks) - 1):
        conv, norm = blocks[index], blocks[index + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            blocks[index] = fuse_conv_bn_eval(conv, norm)
            blocks[index + 1] = nn.Identity()


def prepare_for_inference(bundle: Bundle, *, runtime: CnnRuntime = "onnx") -> Bundle:
    """Make a loaded bundle's CNN ready for fast inference on CPU, in place; other kinds are left as they are.

    * Each batch norm is folded into the convolution before it (inference only: the scale and
      shift of the normalisation become the convolution's weights and bias), which removes about
      a tenth of the CNN's time.
    * The weights go in channels-last layout, so PyTorch uses oneDNN's fast convolutions: about
      2× faster on one core here.
    * With ``runtime = "onnx"`` the network is exported to ONNX Runtime when it first predicts
      (:class:`training.models.cnn_onnx.CnnPredictor`, checked against PyTorch): about 2.5×
      faster again on one core.

    All give the same probabilities as the bundle's network to about 1e-5. An ensemble gets them
    in every member.

    Returns
    -------
    ``bundle`` itself.
    """
    if bundle.model_kind == "cnn":
        import torch

        for network in networks(bundle.model):
            fold_batch_norms(network.blocks)
        bundle.model.to(memory_format=torch.channels_last)
        bundle.cnn_predictor = CnnPredictor(bundle.model, runtime)
    return bundle


def load_scoring_model(bundle_dir: str | Path, *, runtime: CnnRuntime = "onnx") -> Bundle:
    """:func:`training.bundle.load.load_bundle` (which verifies the bundle), then :func:`prepare_for_inference`."""
    return prepare_for_inference(load_bundle(bundle_dir), runtime=runtime)


def model_id(bundle: Bundle) -> str:
    """``<bundle folder name>-<first 8 hex of sha1(config.json)>``: names a trained model exactly.

    Computed from the bytes the bundle was loaded from (:attr:`~training.bundle.load.Bundle.files`).
    """
    digest = hashlib.sha1(bundle.files[CONFIG_FILE]).hexdigest()[:8]
    return f"{bundle.path.name}-{digest}"


@dataclass(frozen=True)
class ScoringModelFactory:
    """Builds the scoring model of a bundle from its broadcast files; picklable, made on the driver.

    Attributes
    ----------
    files
        A broadcast of :attr:`training.bundle.load.Bundle.files` (anything with ``.value``
        holding ``{bundle-relative name: bytes}``), of a bundle the driver has verified.
    source
        The bundle's path, for messages and :attr:`~training.bundle.load.Bundle.path`.
    torch_threads
        Threads torch (and ONNX Runtime) get in the worker process before the model is built (0: leave as is).
    cnn_runtime
        What runs a CNN: ``onnx`` (ONNX Runtime, exported and checked at first use) or ``torch``.
    """

    files: Any
    source: str
    torch_threads: int = 1
    cnn_runtime: CnnRuntime = "onnx"

    def __call__(self) -> "CallModel":
        """The bundle, rebuilt from the files, made ready by :func:`prepare_for_inference`, as a :class:`CallModel`."""
        if self.torch_threads > 0:
            import torch

            torch.set_num_threads(self.torch_threads)
        bundle = load_bundle_from_files(self.files.value, source=self.source)
        return CallModel(prepare_for_inference(bundle, runtime=self.cnn_runtime))


class CallModel:
    """A loaded bundle as call scoring uses it (:class:`ser_udfs.calls.stream.Predictor`).

    A bundle that needs no speaker statistics is scored window by window: its first phase is its
    calibrated probabilities, its second returns them. A CNN fused with stats standardised per
    speaker adapts to each channel: the first phase keeps each window's CNN probabilities and raw
    stats vector (``[n, k + d]``, about 1 KB a window); the second standardises the stats over
    all of the channel's windows (:func:`training.speaker_norm.speaker_standardise`, the channel as
    one speaker, as training did per actor) and fuses, through the bundle's temperature; without
    adaptation it returns the CNN alone through its own ``fallback_temperature``.

    Raises
    ------
    UserError
        For a logistic regression standardised per speaker: it has no part that needs no speaker
        statistics, so a channel with little speech could not be scored.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.feature_config = bundle.feature_config
        self._fused = bundle.fused_model if bundle.needs_speaker_groups else None
        if bundle.needs_speaker_groups and self._fused is None:
            raise UserError(
                f"the model bundle {bundle.path} is a logistic regression on stats standardised per speaker: "
                "call scoring would have nothing to fall back to on a channel with little speech; score calls "
                "with a CNN fused with it (jobs/train.py --model cnn --set cnn.stats_fusion_weight=0.35), "
                "which adapts to each channel, or a logistic regression with logreg.normalisation = \"global\""
            )
        if self._fused is not None and bundle.temperature is not None and bundle.fallback_temperature is None:
            logger.warning(
                "model bundle %s has no fallback_temperature (trained before it existed): channels with too little "
                "speech for adaptation get the CNN's uncalibrated probabilities", bundle.path,
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """The bundle's labels, the order of the probabilities."""
        return self.bundle.labels

    @property
    def adapts_to_speaker(self) -> bool:
        """Whether the bundle standardises stats per speaker (and so adapts to each channel)."""
        return self._fused is not None

    def window_outputs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """float32 ``[n, k]`` calibrated probabilities, or ``[n, k + d]`` CNN probabilities and raw stats."""
        if self._fused is None:
            return self.bundle.predict_proba(batch)
        return np.concatenate([self.bundle.cnn_probabilities(batch), self.bundle.stats_vector(batch)], axis=1).astype(np.float32)

    def channel_probabilities(self, outputs: np.ndarray, *, adapt: bool) -> np.ndarray:
        """Calibrated float32 ``[n, k]`` of one channel's window outputs ``[n, m]`` (see the class)."""
        if self._fused is None:
            return outputs
        k = len(self.labels)
        cnn, stats = outputs[:, :k], outputs[:, k:]
        if adapt:
            standardised = speaker_standardise(stats, np.zeros(len(stats), dtype=np.int64))
            return self.bundle.calibrate(self._fused.fuse(cnn, standardised))
        temperature = self.bundle.fallback_temperature
        return cnn.astype(np.float32) if temperature is None else apply_temperature(cnn, temperature)


def load_call_model(bundle_dir: str | Path, *, runtime: CnnRuntime = "onnx") -> CallModel:
    """:func:`load_scoring_model` as a :class:`CallModel`: what :func:`ser_udfs.calls.stream.score_call` takes."""
    return CallModel(load_scoring_model(bundle_dir, runtime=runtime))
