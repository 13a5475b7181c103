"""Spark wrapper of call scoring: the job's config, the ``mapInArrow`` function and the schemas.

The function runs in the Python workers and never knows what a model is: like
``pyspark.ml.functions.predict_batch_udf`` it is given a zero-argument factory made on the
driver and a model id, and asks :func:`ser_udfs.spark.model_cache.cached_model` for the
predictor, so the model is built once per Python worker process (Spark reuses the workers,
``spark.python.worker.reuse``); every build adds 1 to an accumulator that the job reports.
Each listed file becomes segment rows, turn rows and one call row, or one error row, tagged by
``table_kind``; one bad call never fails the job.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import pyarrow as pa

from ser_udfs.audio.decode import AudioSource
from ser_udfs.calls.stream import (
    CallScoringConfig,
    ChannelChoice,
    Predictor,
    call_timeline,
    call_turns,
    parse_channels,
    score_call,
)
from ser_udfs.errors import ClipError, UserError
from ser_udfs.features.extract_file import clip_id_for
from ser_udfs.spark.faults import fault_point
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
    """``[worker]``: threads each Python worker gives torch (1: one core per task)."""

    torch_threads: int = 1


@dataclass(frozen=True)
class ScoreJobConfig(CallScoringConfig):
    """The whole config of the scoring job (``conf/score.toml``): the settings that decide the
    numbers of the timelines (those of :class:`~ser_udfs.calls.stream.CallScoringConfig`:
    ``[window]``, ``[vad]``, ``[smoothing]``, ``[summary]``, ``[stream]``) and the job's own."""

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

STRETCH_DDL = "struct<channel:string,start_s:double,end_s:double,label:string,confidence:double>"
CALL_COLUMNS_DDL = (
    "call_id string, path string, duration_s double, sample_rate int, channels int, encoding string, "
    "scored_channels array<string>, speech_s map<string,double>, windows_scored int, "
    "channel_windows map<string,int>, adaptation map<string,string>, "
    "talk_share map<string,double>, silence_s double, overlap_s double, turn_count map<string,int>, "
    "mean_turn_s map<string,double>, longest_turn_s map<string,double>, "
    "emotion_share map<string,double>, uncertain_s double, dominant_emotion string, "
    f"negative_stretches array<{STRETCH_DDL}>, model_id string, status string"
)
ERROR_COLUMNS_DDL = "path string, call_id string, error_kind string, error_message string, model_id string"


def turn_columns_ddl(labels: Sequence[str]) -> str:
    """Columns of the ``turns`` table for a model with ``labels`` (probability columns as in ``segments``)."""
    probabilities = ", ".join(f"{probability_column(label)} double" for label in labels)
    return (
        "call_id string, path string, channel string, role string, turn int, start_s double, end_s double, "
        f"duration_s double, windows int, label string, confidence double, {probabilities}, overlap_s double, "
        "model_id string"
    )


def channel_role(channel: str, n_channels: int, customer_channel: int) -> str:
    """``customer`` for the customer channel of a file with several channels, ``agent`` for the
    other one of a stereo file, ``unknown`` otherwise (a mix, a mono file, a third channel)."""
    if channel == "mix" or n_channels < 2:
        return "unknown"
    if channel == str(customer_channel):
        return "customer"
    return "agent" if n_channels == 2 else "unknown"


def probability_column(label: str) -> str:
    """Column name of a label's probability: ``prob_`` + the label in lower case, ``[a-z0-9_]``."""
    return "prob_" + re.sub(r"[^0-9a-z_]", "_", label.lower())


def segment_columns_ddl(labels: Sequence[str]) -> str:
    """Columns of the ``segments`` table for a model with ``labels``."""
    columns = [probability_column(label) for label in labels]
    if len(set(columns)) != len(columns):
        raise UserError(f"the model's labels {list(labels)} give clashing column names {columns}")
    probabilities = ", ".join(f"{column} double" for column in columns)
    return (
        "call_id string, path string, channel string, start_s double, end_s double, speech boolean, turn int, "
        f"label string, confidence double, {probabilities}, model_id string"
    )


def _split_columns(ddl: str) -> list[str]:
    """``"a int, b map<string,double>"`` → ``["a int", "b map<string,double>"]``."""
    columns, depth, start = [], 0, 0
    for index, char in enumerate(ddl + ","):
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            columns.append(ddl[start:index].strip())
            start = index + 1
    return columns


def _names(ddl: str) -> list[str]:
    return [column.split(" ")[0] for column in _split_columns(ddl)]


def table_columns(labels: Sequence[str]) -> dict[str, list[str]]:
    """Column names of each output table (``segments``, ``calls``, ``errors``), in order."""
    return {
        "segments": _names(segment_columns_ddl(labels)),
        "turns": _names(turn_columns_ddl(labels)),
        "calls": _names(CALL_COLUMNS_DDL),
        "errors": _names(ERROR_COLUMNS_DDL),
    }


def table_ddls(labels: Sequence[str]) -> dict[str, str]:
    """DDL of each output table."""
    return {"segments": segment_columns_ddl(labels), "turns": turn_columns_ddl(labels), "calls": CALL_COLUMNS_DDL,
            "errors": ERROR_COLUMNS_DDL}


def output_ddl(labels: Sequence[str]) -> str:
    """What the scoring function yields: the union of the three tables' columns, plus ``table_kind``."""
    seen: dict[str, str] = {}
    for ddl in table_ddls(labels).values():
        for name, column in zip(_names(ddl), _split_columns(ddl)):
            seen.setdefault(name, column)
    return ", ".join([*seen.values(), "table_kind string"])


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


def call_rows(
    path: str,
    source: AudioSource,
    predictor: Predictor,
    config: CallScoringConfig,
    channels: ChannelChoice,
    model_id: str,
    customer_channel: int = 1,
) -> list[dict[str, Any]]:
    """Score one call into its rows: segments, turns, then the call row (each with ``table_kind``);
    ``customer_channel`` names the turns' roles (:func:`channel_role`)."""
    call_id = clip_id_for(path)
    scores = score_call(source, predictor, config, channels=channels)
    segments, summary = call_timeline(scores, config)
    base = {"call_id": call_id, "path": path, "model_id": model_id}
    rows = []
    for segment in segments:
        row = {
            **base, "channel": segment.channel, "start_s": segment.start_s, "end_s": segment.end_s,
            "speech": segment.speech, "turn": segment.turn, "label": segment.label, "confidence": segment.confidence,
            "table_kind": "segments",
        }
        for index, label in enumerate(scores.labels):
            row[probability_column(label)] = None if segment.probabilities is None else float(segment.probabilities[index])
        rows.append(row)
    for turn in call_turns(scores, config.summary.min_confidence):
        row = {
            **base, "channel": turn.channel, "role": channel_role(turn.channel, scores.info.channels, customer_channel),
            "turn": turn.turn, "start_s": turn.start_s, "end_s": turn.end_s, "duration_s": turn.end_s - turn.start_s,
            "windows": turn.windows, "label": turn.label, "confidence": turn.confidence,
            "overlap_s": turn.overlap_s, "table_kind": "turns",
        }
        for index, label in enumerate(scores.labels):
            row[probability_column(label)] = None if turn.probabilities is None else float(turn.probabilities[index])
        rows.append(row)
    rows.append({
        **base,
        "duration_s": summary.duration_s,
        "sample_rate": scores.info.sample_rate,
        "channels": scores.info.channels,
        "encoding": scores.info.subtype,
        "scored_channels": [channel.name for channel in scores.channels],
        "speech_s": summary.speech_s,
        "windows_scored": scores.windows_scored,
        "channel_windows": {channel.name: len(channel.windows) for channel in scores.channels},
        "adaptation": {channel.name: channel.adaptation for channel in scores.channels},
        "talk_share": summary.talk.talk_share,
        "silence_s": summary.talk.silence_s,
        "overlap_s": summary.talk.overlap_s,
        "turn_count": summary.talk.turn_count,
        "mean_turn_s": summary.talk.mean_turn_s,
        "longest_turn_s": summary.talk.longest_turn_s,
        "emotion_share": summary.emotion_share,
        "uncertain_s": summary.uncertain_s,
        "dominant_emotion": summary.dominant_emotion,
        "negative_stretches": [asdict(stretch) for stretch in summary.negative_stretches],
        "status": summary.status,
        "table_kind": "calls",
    })
    return rows


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
                    predictor = cached_model(model_id, make_predictor, on_load=count_load)
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
