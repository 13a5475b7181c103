"""The model UDFs of :mod:`ser_udfs.spark.udfs` made from a bundle folder.

``ser_udfs`` never imports ``training``: its :func:`~ser_udfs.spark.udfs.clip_emotion_udf` is given
a factory, and this module makes one from a model bundle (verified once, on the driver; rebuilt
from its bytes once per Python worker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ser_udfs.errors import UserError
from ser_udfs.spark.udfs import clip_emotion_udf
from training.bundle.load import Bundle, load_bundle_from_files
from training.inference import CallModel, load_scoring_model, model_id, prepare_for_inference


class ClipPredictor:
    """A bundle as a clip model: its calibrated probabilities per clip, each clip on its own.

    A CNN fused with stats standardised per speaker has no speaker to standardise over for a
    single clip: it gives its CNN alone through its ``fallback_temperature``, as call scoring does
    for a channel with too little speech.
    """

    def __init__(self, bundle: Bundle) -> None:
        self._model = CallModel(bundle)
        self.labels = bundle.labels
        self.feature_config = bundle.feature_config

    def predict_proba(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated ``[n, len(labels)]``."""
        return self._model.channel_probabilities(self._model.window_outputs(batch), adapt=False)


class BundleFactory:
    """Rebuilds a bundle from its files as a :class:`ClipPredictor` (picklable: shipped with the UDF)."""

    def __init__(self, files: Mapping[str, bytes], source: str) -> None:
        self.files = dict(files)
        self.source = source

    def __call__(self) -> ClipPredictor:
        return ClipPredictor(prepare_for_inference(load_bundle_from_files(self.files, source=self.source)))


def emotion(bundle_dir: str | Path, *, source: str = "bytes") -> Any:
    """A pandas UDF: file bytes (``source="waveform"``: the preprocessed clips of
    :func:`~ser_udfs.spark.udfs.waveform_udf` with the bundle's feature config; ``source="features"``:
    the features struct of :func:`~ser_udfs.spark.udfs.features_udf`, or of a features table's columns) →
    ``struct<label, confidence, probabilities, error>`` with the bundle at ``bundle_dir`` (any kind:
    logistic regression, CNN, fused, transformer), calibrated as the bundle is;
    ``spark.udf.register("ser_emotion", emotion(dir))`` makes it a SQL function."""
    bundle = load_scoring_model(bundle_dir)
    ClipPredictor(bundle)  # refuses, here, a bundle that cannot score a clip on its own
    if source == "features" and "waveform" in bundle.inputs:
        raise UserError(f"the model bundle {bundle.path} ({bundle.model_kind}) reads waveforms, which a features "
                        'struct does not hold; give it the file bytes or source="waveform"')
    return clip_emotion_udf(BundleFactory(bundle.files, str(bundle.path)), model_id=model_id(bundle),
                            feature_config=bundle.feature_config, labels=bundle.labels, source=source)
