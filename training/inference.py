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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.bundle.format import CONFIG_FILE
from training.bundle.load import Bundle, load_bundle, load_bundle_from_files
from training.models.cnn import networks

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


def prepare_for_inference(bundle: Bundle) -> Bundle:
    """Make a loaded bundle's CNN ready for fast inference on CPU, in place; other kinds are left as they are.

    * Each batch norm is folded into the convolution before it (inference only: the scale and
      shift of the normalisation become the convolution's weights and bias), which removes about
      a tenth of the CNN's time.
    * The weights go in channels-last layout, so PyTorch uses oneDNN's fast convolutions: about
      2× faster on one core here.

    Both give the same probabilities as the bundle's network to about 1e-5. An ensemble gets both
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
    return bundle


def load_scoring_model(bundle_dir: str | Path) -> Bundle:
    """:func:`training.bundle.load.load_bundle` (which verifies the bundle), then :func:`prepare_for_inference`."""
    return prepare_for_inference(load_bundle(bundle_dir))


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
        Threads torch gets in the worker process before the model is built (0: leave as is).
    """

    files: Any
    source: str
    torch_threads: int = 1

    def __call__(self) -> Bundle:
        """The bundle, rebuilt from the files and made ready by :func:`prepare_for_inference`."""
        if self.torch_threads > 0:
            import torch

            torch.set_num_threads(self.torch_threads)
        return prepare_for_inference(load_bundle_from_files(self.files.value, source=self.source))
