"""Spark wrapper of call scoring: the job's config, the ``mapInArrow`` function and the schemas.

The function runs in the Python workers and never knows what a model is: like
``pyspark.ml.functions.predict_batch_udf`` it is given a zero-argument factory made on the
driver and a model id, and asks :func:`ser_udfs.spark.model_cache.cached_model` for the
predictor, so the model is built once per Python worker process (Spark reuses the workers,
``spark.python.worker.reuse``); every build adds 1 to an accumulator that the job reports.
Each listed file becomes its rows of the tables of :mod:`ser_udfs.calls.tables` (segments, turns,
channels, one call row), or one error row, tagged by ``table_kind``; one bad call never fails the job.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import pyarrow as pa

from ser_udfs.audio.decode import AudioSource
from ser_udfs.calls.config import CallScoringConfig
from ser_udfs.calls.stream import ChannelChoice, Predictor, parse_channels
from ser_udfs.calls.tables import TABLES, call_rows, split_columns, table_ddls
from ser_udfs.errors import ClipError
from ser_udfs.features.extract_file import clip_id_for
from ser_udfs.spark.faults import fault_point
from ser_udfs.spark.incremental import TableSpec
from ser_udfs.spark.listing import listing_clip_error, local_path
from ser_udfs.spark.model_cache import cached_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelsSection:
    """``[channels]``: which channels are scored, and which one holds the customer."""

    select: str = "all"
    customer: int = 1


@dataclass(frozen=True)
class ReadSection:
    """``[read]``: how workers reach each file, and how many files a task takes."""

    mode: Literal["auto", "python", "spark", "pyarrow"] = "auto"
    files_per_partition: int = 4


@dataclass(frozen=True)
class OutputSection:
    """``[output]``: table format, Arrow batch size, and the call to plot (id or path ending)."""

    format: Literal["parquet", "csv"] = "parquet"
    rows_per_batch: int = 2048
    plot_call: str = ""


@dataclass(frozen=True)
class WorkerSection:
    """``[worker]``: threads each Python worker gives torch (1: one core per task), and what runs a
    CNN (``onnx``: ONNX Runtime, exported from the bundle's network at first use and checked against
    PyTorch; ``torch``: PyTorch)."""

    torch_threads: int = 1
    cnn_runtime: Literal["onnx", "torch"] = "onnx"


@dataclass(frozen=True)
class ScoreJobConfig(CallScoringConfig):
    """The whole config of the scoring job (``conf/score.toml``): the settings that decide the
    numbers of the tables (those of :class:`~ser_udfs.calls.config.CallScoringConfig`:
    ``[window]``, ``[vad]``, ``[adaptation]``, ``[smoothing]``, ``[summary]``, ``[stream]``,
    ``[analytics]``, ``[escalation]``) and the job's own."""

    channels: ChannelsSection = field(default_factory=ChannelsSection)
    read: ReadSection = field(default_factory=ReadSection)
    output: OutputSection = field(default_factory=OutputSection)
    worker: WorkerSection = field(default_factory=WorkerSection)

    @property
    def channel_choice(self) -> ChannelChoice:
        """``channels.select`` resolved (``customer`` → ``(channels.customer,)``)."""
        return parse_channels(self.channels.select, customer_channel=self.channels.customer)


#: Columns the scoring function reads (``content`` is null when workers open files themselves).
INPUT_DDL = "path string, content binary, listing_error string"


def output_ddl(labels: Sequence[str]) -> str:
    """What the scoring function yields: the union of the tables' columns, plus ``table_kind``
    (a column name means the same type in every table)."""
    seen: dict[str, str] = {}
    for ddl in table_ddls(labels).values():
        for column in split_columns(ddl):
            if seen.setdefault(column.split(" ")[0], column) != column:
                raise AssertionError(f"column {column!r} has another type in another table: {seen[column.split(' ')[0]]!r}")
    return ", ".join([*seen.values(), "table_kind string"])


def table_specs(file_format: str) -> list[TableSpec]:
    """How the job writes its tables (each flat, in ``output.format``), for incremental runs."""
    return [TableSpec(name, file_format) for name in TABLES]


def open_source(path: str, content: bytes | None, read_mode: str) -> AudioSource:
    """What the decoder reads: the bytes Spark read, the local file, or a pyarrow stream."""
    if content is not None:
        return content
    local = local_path(path)
    if local is not None:
        return local
    if read_mode == "pyarrow":
        import pyarrow.fs

        try:
            filesystem, inner = pyarrow.fs.FileSystem.from_uri(re.sub(r"^s3a://", "s3://", path))
            return filesystem.open_input_file(inner)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ClipError("read", f"cannot open {path} with pyarrow: {exc}") from None
    raise ClipError("read", f"cannot open {path} from Python and Spark did not read it")


def make_score_fn(
    *,
    model_id: str,
    make_predictor: Callable[[], Predictor],
    config: CallScoringConfig,
    channels: ChannelChoice,
    read_mode: str,
    output_schema: pa.Schema,
    rows_per_batch: int = 2048,
    model_loads: Any = None,
    customer_channel: int = 1,
    cache_key: str = "",
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` function of the scoring job.

    Parameters
    ----------
    model_id
        An id made on the driver that names the model exactly (the per-worker cache's key).
    make_predictor
        Zero-argument, picklable factory of the predictor, called at most once per Python
        worker process (:func:`ser_udfs.spark.model_cache.cached_model`).
    config, channels
        Scoring settings and the channels to score.
    read_mode
        ``[read] mode``; ``pyarrow`` opens remote URIs from the worker, streaming.
    output_schema
        Arrow schema of :func:`output_ddl`.
    rows_per_batch
        Rows per Arrow batch yielded.
    model_loads
        A Spark accumulator counting predictor builds (one per Python worker), or None.
    customer_channel
        ``channels.customer``: the channel whose turns are the customer's.
    cache_key
        The per-worker cache's key when the predictor depends on more than the model (e.g. the
        CNN runtime): a reused worker then builds it anew; ``""``: ``model_id``.
    """

    def count_load() -> None:
        if model_loads is not None:
            model_loads.add(1)

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        predictor: Predictor | None = None
        rows: list[dict[str, Any]] = []
        for batch in batches:
            for row in batch.to_pylist():
                if predictor is None:
                    predictor = cached_model(cache_key or model_id, make_predictor, on_load=count_load)
                rows.extend(_rows_for_file(
                    row["path"], row["content"], predictor, config, channels, read_mode, model_id,
                    listing_error=row.get("listing_error"), customer_channel=customer_channel,
                ))
                if len(rows) >= rows_per_batch:
                    yield pa.RecordBatch.from_pylist(rows, schema=output_schema)
                    rows = []
                    fault_point("score")
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=output_schema)
        fault_point("score")

    return score_partition


def _rows_for_file(
    path: str,
    content: bytes | None,
    predictor: Predictor,
    config: CallScoringConfig,
    channels: ChannelChoice,
    read_mode: str,
    model_id: str,
    *,
    listing_error: str | None = None,
    customer_channel: int = 1,
) -> list[dict[str, Any]]:
    error = {"path": path, "call_id": clip_id_for(path), "model_id": model_id, "table_kind": "errors"}
    try:
        if listing_error:
            raise listing_clip_error(listing_error)
        source = open_source(path, content, read_mode)
        try:
            return call_rows(path, source, predictor, config, channels, model_id, customer_channel)
        finally:
            if hasattr(source, "close"):
                source.close()
    except ClipError as exc:
        return [{**error, "error_kind": exc.kind, "error_message": exc.message}]
    except Exception as exc:  # one bad call never fails the job
        log.warning("unexpected error on %s", path, exc_info=True)
        return [{**error, "error_kind": "internal", "error_message": f"{type(exc).__name__}: {exc}"}]
