"""Spark side of frozen-encoder embeddings: the pandas UDF and reading an embeddings table.

The UDF is an iterator-of-Series pandas UDF: each Python worker loads the encoder once (cached
per process; Spark reuses workers, ``spark.python.worker.reuse=true``) and turns every Arrow
batch of ``waveform`` values into pooled hidden states with
:func:`ser_udfs.embeddings.pooled_hidden_states`. The model folder given by ``--pretrained``
must be readable at the same path on every worker (a shared mount, or a hub id with a hub or a
filled cache there).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from ser_udfs.embeddings import EMBEDDING_COLUMNS, EmbeddingConfig, pooled_hidden_states, resolve_device, resolve_precision
from ser_udfs.errors import UserError
from ser_udfs.spark_io import OutputDir, read_manifest_json

log = logging.getLogger(__name__)

#: Folder of an embeddings output holding the table.
EMBEDDINGS_TABLE = "embeddings"
#: Columns the embeddings table copies from the features table.
ROW_COLUMNS = ("clip_id", "path", "corpus", "speaker", "gender", "label", "raw_label", "augmentation",
               "feature_config_version")


@functools.lru_cache(maxsize=2)
def worker_encoder(pretrained: str, device: str, torch_threads: int) -> Any:
    """The encoder of this Python worker, loaded on first use (:func:`training.hf_audio.load_encoder`)."""
    import torch

    from training.hf_audio import load_encoder

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    return load_encoder(pretrained, device=resolve_device(device))


def make_embedding_udf(config: EmbeddingConfig, *, sample_rate_hz: int) -> Any:
    """A pandas UDF ``waveform array<float> → embedding array<float>`` (flattened ``[vectors, hidden]``).

    Parameters
    ----------
    config
        Encoder (``pretrained``), layers (resolved, non-negative), layer weights, padding,
        batch size, device, precision and worker threads.
    sample_rate_hz
        Rate of the waveforms (the features table's ``audio.target_sample_rate_hz``).
    """

    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        encoder = worker_encoder(config.pretrained, config.device, config.torch_threads)
        device = next(encoder.model.parameters()).device
        precision = resolve_precision(config.precision, device)
        for waveforms in batches:
            if waveforms.empty:
                yield pd.Series([], dtype=object)
                continue
            lengths = {len(value) for value in waveforms}
            if len(lengths) > 1:
                raise ValueError(f"waveforms of different lengths {sorted(lengths)[:4]} in one table")
            pooled = pooled_hidden_states(
                encoder.model, encoder.extractor, np.stack([np.asarray(v, dtype=np.float32) for v in waveforms]),
                sample_rate_hz=sample_rate_hz, layers=config.layers, layer_weights=config.layer_weights,
                trim_padding=config.trim_padding, batch_size=config.batch_size, precision=precision,
            )
            yield pd.Series(list(pooled.reshape(len(pooled), -1)))

    return F.pandas_udf(embed, ArrayType(FloatType()))


def is_embeddings_table(spark: SparkSession, uri: str) -> bool:
    """Whether ``uri`` is an output of ``jobs/extract_embeddings.py`` (it has ``embeddings/``)."""
    return OutputDir(spark, uri).exists(EMBEDDINGS_TABLE)


def read_embeddings_table(
    spark: SparkSession, uri: str, *, labelled_only: bool = True
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows of the embeddings table at ``uri`` and its ``_manifest.json`` (with ``"feature_config"``).

    The frame holds :data:`ROW_COLUMNS` and :data:`EMBEDDING_COLUMNS`, what
    :func:`training.embedding_head.train_embedding_head_from_frame` reads.
    """
    manifest = read_manifest_json(spark, uri)
    output = OutputDir(spark, uri)
    if not output.exists(EMBEDDINGS_TABLE):
        raise UserError(f"{uri} holds no embeddings table; write one with jobs/extract_embeddings.py")
    table = spark.read.parquet(output.child(EMBEDDINGS_TABLE))
    if labelled_only:
        table = table.where(F.col("label").isNotNull())
    return table.select(*ROW_COLUMNS, *EMBEDDING_COLUMNS).toPandas(), manifest
