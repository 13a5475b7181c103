"""One per-worker cache of loaded models, fed a factory: it never knows what a model is.

Spark reuses its Python worker processes (``spark.python.worker.reuse``), so a model loaded by
one task serves the next ones. The wrappers in :mod:`ser_udfs.spark` ask this cache for the
object behind an id made on the driver (a bundle's id, an encoder's fingerprint) and hand it a
zero-argument factory that builds the object when the process does not hold it yet, in the way
``pyspark.ml.functions.predict_batch_udf`` and ``pyspark.ml.model_cache`` do. The cache is a
small LRU guarded by a lock (tasks of one worker may run in threads), so a long-lived worker
that sees many models keeps only the most recent few.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Models a Python worker keeps at once; the least recently used one goes first.
CAPACITY = 4

_models: "OrderedDict[str, Any]" = OrderedDict()
_lock = threading.Lock()


def cached_model(model_id: str, factory: Callable[[], T], *, on_load: Callable[[], None] | None = None) -> T:
    """The object cached under ``model_id`` in this process, built by ``factory()`` the first time.

    Parameters
    ----------
    model_id
        An id made on the driver that changes whenever the model does.
    factory
        Builds the object; called at most once per id while the id stays cached.
    on_load
        Called after each build (the jobs count loads with an accumulator).
    """
    with _lock:
        if model_id in _models:
            _models.move_to_end(model_id)
            return _models[model_id]
        model = factory()
        _models[model_id] = model
        while len(_models) > CAPACITY:
            evicted, _ = _models.popitem(last=False)
            log.info("dropped model %s from worker process %d", evicted, os.getpid())
    if on_load is not None:
        on_load()
    log.info("loaded model %s in worker process %d", model_id, os.getpid())
    return model


def clear() -> None:
    """Forget every cached model (tests, and workers asked to reload)."""
    with _lock:
        _models.clear()
