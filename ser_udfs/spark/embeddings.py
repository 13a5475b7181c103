"""Spark side of frozen-encoder embeddings: the pandas UDF, the embeddings table, and reading it back.

The UDF is an iterator-of-Series pandas UDF fed a zero-argument factory made on the driver, in
the way of ``pyspark.ml.functions.predict_batch_udf``: each Python worker builds the embedding
function once (:func:`ser_udfs.spark.model_cache.cached_model`; Spark reuses workers,
``spark.python.worker.reuse=true``) and turns every Arrow batch of ``waveform`` values into
pooled hidden states. What the function is, the UDF does not know. With
:func:`ser_udfs.encoders.pooling.embedder_factory`, the model folder given by ``--pretrained``
must be readable at the same path on every worker (a shared mount, or a hub id with a hub or a
filled cache there).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from ser_udfs.encoders.pooling import EMBEDDING_COLUMNS, EmbeddingPlan, EmbedFn
from ser_udfs.errors import UserError
from ser_udfs.spark.feature_table import ROW_COLUMNS, check_holds, open_feature_table
from ser_udfs.spark.io import OutputDir, read_manifest_json
from ser_udfs.spark.model_cache import cached_model

log = logging.getLogger(__name__)

#: Folder of an embeddings output holding the table.
EMBEDDINGS_TABLE = "embeddings"


def make_embedding_udf(make_embed_fn: Callable[[], EmbedFn], *, model_id: str) -> Any:
    """A pandas UDF ``waveform array<float> → embedding array<float>`` (flattened ``[vectors, hidden]``).

    Parameters
    ----------
    make_embed_fn
        Zero-argument factory made on the driver; it returns ``embed(waveforms)``, float32
        ``[b, samples]`` → ``[b, vectors, hidden]``, and runs once per Python worker and id.
    model_id
        Id made on the driver that changes whenever what ``make_embed_fn`` builds does.
    """

    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        embed_fn = cached_model(model_id, make_embed_fn)
        for waveforms in batches:
            if waveforms.empty:
                yield pd.Series([], dtype=object)
                continue
            lengths = {len(value) for value in waveforms}
            if len(lengths) > 1:
                raise ValueError(f"waveforms of different lengths {sorted(lengths)[:4]} in one table")
            pooled = embed_fn(np.stack([np.asarray(value, dtype=np.float32) for value in waveforms]))
            yield pd.Series(list(pooled.reshape(len(pooled), -1)))

    return F.pandas_udf(embed, ArrayType(FloatType()))


def open_waveform_table(spark: SparkSession, uri: str) -> tuple[DataFrame, dict[str, Any]]:
    """The features table at ``uri`` and its manifest; refused unless every row has a waveform."""
    table, manifest = open_feature_table(spark, uri, columns=["waveform"])
    if table.where(F.col("waveform").isNull()).limit(1).count():
        raise UserError(
            f"the features table {uri} has no waveforms for every row; "
            "re-run the extraction with --set output.keep_waveform=true"
        )
    return table, manifest


def embedding_rows(table: DataFrame, plan: EmbeddingPlan, *, partitions: int) -> DataFrame:
    """Rows of the embeddings table: :data:`ROW_COLUMNS` of ``table`` and :data:`EMBEDDING_COLUMNS`.

    The ``waveform`` column of ``table`` is embedded by :meth:`EmbeddingPlan.factory` in
    ``partitions`` partitions.
    """
    embed = make_embedding_udf(plan.factory(), model_id=plan.model_id)
    values = {
        "embedding": embed(F.col("waveform")),
        "embedding_shape": F.array(*[F.lit(size) for size in plan.shape]).cast("array<int>"),
        "embedding_layers": F.array(*[F.lit(layer) for layer in plan.config.layers]).cast("array<int>"),
        "embedding_layer_weights": F.array(*[F.lit(float(w)) for w in plan.config.layer_weights]).cast("array<float>"),
        "embedding_version": F.lit(plan.version),
    }
    return table.repartition(partitions).select(*ROW_COLUMNS, *[values[name].alias(name) for name in EMBEDDING_COLUMNS])


def is_embeddings_table(spark: SparkSession, uri: str) -> bool:
    """Whether ``uri`` is an output of ``jobs/extract_embeddings.py`` (it has ``embeddings/``)."""
    return OutputDir(spark, uri).exists(EMBEDDINGS_TABLE)


def read_embeddings_table(
    spark: SparkSession, uri: str, *, labelled_only: bool = True
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows of the embeddings table at ``uri`` and its ``_manifest.json`` (with ``"feature_config"``).

    The frame holds :data:`ROW_COLUMNS` and :data:`EMBEDDING_COLUMNS`: what training an
    ``embed-*`` head on an embeddings table reads.
    """
    check_holds(uri, "embeddings table", "jobs/extract_embeddings.py")
    manifest = read_manifest_json(spark, uri)
    output = OutputDir(spark, uri)
    if not output.exists(EMBEDDINGS_TABLE):
        raise UserError(f"{uri} holds no embeddings table; write one with jobs/extract_embeddings.py")
    table = spark.read.parquet(output.child(EMBEDDINGS_TABLE))
    if labelled_only:
        table = table.where(F.col("label").isNotNull())
    return table.select(*ROW_COLUMNS, *EMBEDDING_COLUMNS).toPandas(), manifest
