"""The CNN scored through ONNX Runtime: a graph exported from the bundle's network when it is first used.

The bundle stays safetensors; scoring derives the graph from the loaded (batch-norm folded)
network in memory, the first time it predicts, so the driver that only verifies a bundle never
pays for it. The derived graph is checked before it is used: on a fixed probe batch its
probabilities must equal PyTorch's to :data:`TOLERANCE`; otherwise, or when the export fails,
scoring keeps PyTorch and logs why. On one CPU core ONNX Runtime runs the default CNN about 2.5×
faster than PyTorch (``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from training.models.cnn import CnnModel
from training.models.cnn import predict_proba as torch_predict_proba

logger = logging.getLogger(__name__)

#: Largest difference of a probability between the exported graph and PyTorch that is accepted.
TOLERANCE = 1e-4

#: Frames of the probe batch (any number ≥ 16 works: the graph's frame axis is dynamic).
PROBE_FRAMES = 94

CnnRuntime = Literal["onnx", "torch"]


class _Probabilities(nn.Module):
    """The network with its softmax, so the graph returns probabilities ``[b, n_classes]``."""

    def __init__(self, model: CnnModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(features), dim=1)


class CnnPredictor:
    """Class probabilities of a CNN model (single network or ensemble) for ``[n, rows, frames]`` maps.

    Parameters
    ----------
    model
        The network, in eval mode (as :func:`training.inference.prepare_for_inference` leaves it).
    runtime
        ``onnx``: export it to ONNX Runtime on the first call (checked, PyTorch if that fails);
        ``torch``: PyTorch.
    threads
        Intra-op threads of the ONNX Runtime session; ``0``: as many as torch uses.
    """

    def __init__(self, model: CnnModel, runtime: CnnRuntime = "onnx", *, threads: int = 0) -> None:
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"cnn runtime must be 'onnx' or 'torch', not {runtime!r}")
        self.model = model
        self.requested = runtime
        self.threads = threads
        self._session: Any = None
        self._checked = runtime == "torch"

    @property
    def runtime(self) -> CnnRuntime:
        """What predicts now: ``onnx`` once the graph passed its check, else ``torch``."""
        return "onnx" if self._session is not None else "torch"

    def prepare(self, rows: int) -> None:
        """Export and check the graph now, for inputs of ``rows`` rows, instead of at the first call."""
        if not self._checked:
            self._checked = True
            self._session = self._exported_session(rows=rows)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """float32 ``[n, n_classes]`` probabilities for float32 ``[n, rows, frames]`` features."""
        self.prepare(rows=features.shape[1])
        if self._session is None or len(features) == 0:
            return torch_predict_proba(self.model, features)
        (probabilities,) = self._session.run(None, {"features": np.ascontiguousarray(features, dtype=np.float32)})
        return probabilities.astype(np.float32, copy=False)

    def _exported_session(self, *, rows: int) -> Any:
        """An ONNX Runtime session of the network that passed the probe check, else ``None``."""
        probe = np.random.default_rng(0).normal(-40.0, 15.0, size=(3, rows, PROBE_FRAMES)).astype(np.float32)
        try:
            import onnxruntime

            session = onnxruntime.InferenceSession(self._graph(probe), self._options(onnxruntime),
                                                   providers=["CPUExecutionProvider"])
            (exported,) = session.run(None, {"features": probe})
        except Exception as error:  # noqa: BLE001 - any failure of an optional speed-up falls back
            logger.warning("the CNN could not be exported to ONNX Runtime (%s); scoring with PyTorch", error)
            return None
        difference = float(np.abs(exported - torch_predict_proba(self.model, probe)).max())
        if not difference <= TOLERANCE:
            logger.warning("the CNN exported to ONNX differs from PyTorch by %.2g (> %.0e); scoring with PyTorch",
                           difference, TOLERANCE)
            return None
        logger.info("CNN exported to ONNX Runtime (probe difference %.1e)", difference)
        return session

    def _graph(self, probe: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        self.model.eval()
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation warnings, per export
            torch.onnx.export(
                _Probabilities(self.model), (torch.from_numpy(probe),), buffer, dynamo=False,
                input_names=["features"], output_names=["probabilities"],
                dynamic_axes={"features": {0: "batch", 2: "frames"}, "probabilities": {0: "batch"}},
                opset_version=17,
            )
        return buffer.getvalue()

    def _options(self, onnxruntime: Any) -> Any:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        return options
