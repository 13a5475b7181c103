"""Spark wrapper of the per-clip extraction: the ``mapInArrow`` functions and the schemas.

The functions run in the Python workers. They receive Arrow batches of listed files (path, the
manifest's labels if any, and the file's bytes when Spark read them). Audio arrays go straight
into Arrow list columns, without a pass through pandas objects. Then either

* :func:`make_extract_fn` yields the feature rows and error rows, tagged by ``table_kind``, for
  Spark's Parquet writer (any output file system), or
* :func:`make_extract_write_fn` writes them itself with PyArrow into a local staging folder, laid
  out as Spark would (``features/corpus=<value>/part-*.parquet``, ``errors/part-*.parquet``), and
  yields one small receipt per file. Feature rows are about 55 kB of floats each; sending them
  through the JVM and parquet-mr costs more CPU than computing them, so local outputs take
  this way (see ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ser_udfs.corpora import ClipInfo, parse_clip_path
from ser_udfs.errors import ClipError
from ser_udfs.features.extract_file import ExtractOptions, clip_id_for, extract_file
from ser_udfs.spark.faults import fault_point
from ser_udfs.features.config import FeatureConfig
from ser_udfs.spark.listing import listing_clip_error, local_path

log = logging.getLogger(__name__)

#: Columns the extraction function reads (``content`` may be null: then the file is opened by path).
INPUT_DDL = (
    "path string, content binary, manifest_corpus string, manifest_speaker string, "
    "manifest_gender string, manifest_label string, manifest_raw_label string, "
    "manifest_meta map<string,string>, labelled_by string, listing_error string"
)

FEATURE_COLUMNS_DDL = (
    "clip_id string, path string, corpus string, speaker string, gender string, label string, "
    "raw_label string, augmentation string, source_sample_rate int, source_channels int, "
    "source_duration_s double, log_mel array<float>, log_mel_shape array<int>, "
    "mfcc array<float>, mfcc_shape array<int>, zcr array<float>, zcr_shape array<int>, "
    "stats array<float>, egemaps array<float>, waveform array<float>, meta map<string,string>, "
    "feature_config_version string"
)

#: What :func:`make_extract_fn`'s function yields: feature columns plus the error columns.
OUTPUT_DDL = FEATURE_COLUMNS_DDL + ", error_kind string, error_message string, table_kind string"

ERROR_COLUMNS = ("path", "corpus", "speaker", "label", "error_kind", "error_message")
ERRORS_DDL = ", ".join(f"{name} string" for name in ERROR_COLUMNS)

#: What :func:`make_extract_write_fn`'s function yields: one row per Parquet file it wrote.
#: ``file`` is relative to the staging folder; ``clips`` counts the rows of original clips.
RECEIPT_DDL = "table_name string, file string, rows long, clips long"

#: Hive's spelling of a null or empty partition value.
DEFAULT_PARTITION_NAME = "__HIVE_DEFAULT_PARTITION__"

# Characters Spark escapes as %XX in partition folder names (ExternalCatalogUtils.escapePathName).
_PARTITION_ESCAPES = frozenset([chr(code) for code in range(0x01, 0x20)] + list('"#%\'*/:=?\\\x7f{[]^'))

# Low-cardinality text columns: dictionary-encoded. Float arrays never repeat: plain encoding.
_DICTIONARY_COLUMNS = (
    "corpus", "speaker", "gender", "label", "raw_label", "augmentation", "feature_config_version", "error_kind",
)

_MAPS = ("log_mel", "mfcc", "zcr")
_FLOAT_LIST = pa.list_(pa.float32())
_INT_LIST = pa.list_(pa.int32())
_META = pa.map_(pa.string(), pa.string())


def partition_folder(column: str, value: str | None) -> str:
    """``column=value`` folder name as Spark's writer spells it (``corpus=a%2Fb``).

    Spark escapes control characters and ``"#%'*/:=?\\{[]^`` (and DEL) as ``%XX``; a null or
    empty value becomes :data:`DEFAULT_PARTITION_NAME`. Spark's reader undoes this.
    """
    if not value:
        return f"{column}={DEFAULT_PARTITION_NAME}"
    return column + "=" + "".join(f"%{ord(c):02X}" if c in _PARTITION_ESCAPES else c for c in value)


def clip_info_for(row: Mapping[str, Any], cremad_gender: Mapping[str, str]) -> ClipInfo:
    """Labels of one listed file: from the user's manifest when it has them, else from its name."""
    if row["labelled_by"] == "manifest":
        return ClipInfo(
            corpus=row["manifest_corpus"] or "manifest",
            speaker=row["manifest_speaker"],
            gender=row["manifest_gender"],
            label=row["manifest_label"],
            raw_label=row["manifest_raw_label"],
            meta=dict(row["manifest_meta"] or {}),
        )
    return parse_clip_path(unquote(row["path"]), cremad_gender=cremad_gender)


class _Columns:
    """Column-wise accumulator of output rows, turned into one Arrow batch."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[Any]] = {
            name: []
            for name in (
                "clip_id", "path", "corpus", "speaker", "gender", "label", "raw_label",
                "augmentation", "source_sample_rate", "source_channels", "source_duration_s",
                "feature_config_version", "error_kind", "error_message", "table_kind",
            )
        }
        self.meta: list[list[tuple[str, str]]] = []
        self.arrays: dict[str, list[np.ndarray | None]] = {
            name: [] for name in ("log_mel", "mfcc", "zcr", "stats", "egemaps", "waveform")
        }
        self.shapes: dict[str, list[list[int] | None]] = {name: [] for name in _MAPS}

    def __len__(self) -> int:
        return len(self.meta)

    def add(self, **values: Any) -> None:
        for name, column in self.scalars.items():
            column.append(values.get(name))
        self.meta.append(sorted((values.get("meta") or {}).items()))
        features = values.get("features") or {}
        for name, column in self.arrays.items():
            column.append(values.get("waveform") if name == "waveform" else features.get(name))
        for name, column in self.shapes.items():
            column.append(list(features[name].shape) if name in features else None)

    def to_batch(self, schema: pa.Schema) -> pa.RecordBatch:
        """The rows as one batch of ``schema`` (any subset of :data:`OUTPUT_DDL`'s columns)."""
        return pa.RecordBatch.from_arrays([self._column(field) for field in schema], schema=schema)

    def _column(self, field: pa.Field) -> pa.Array:
        name = field.name
        if name in self.scalars:
            return pa.array(self.scalars[name], type=field.type)
        if name == "meta":
            return pa.array(self.meta, type=_META)
        if name in self.arrays:
            return _float_lists(self.arrays[name])
        return pa.array(self.shapes[name.removesuffix("_shape")], type=_INT_LIST)


def _float_lists(values: list[np.ndarray | None]) -> pa.Array:
    """Arrow ``list<float>`` of flattened arrays (null where None), built without copies per row."""
    lengths = np.array([0 if v is None else v.size for v in values], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32)
    present = [v.ravel() for v in values if v is not None]
    flat = np.concatenate(present).astype(np.float32, copy=False) if present else np.zeros(0, np.float32)
    mask = pa.array([v is None for v in values], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)


def _prepare_worker() -> None:
    """Once per Python worker process, before its first file: one BLAS/OpenMP thread.

    Spark already runs one worker per core. ``spark.executorEnv.OMP_NUM_THREADS`` does not reach
    every deployment, and setting the variable once NumPy has loaded OpenBLAS changes nothing,
    so the pools are limited directly.
    """
    global _THREADS_PINNED
    if not _THREADS_PINNED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _THREADS_PINNED = True


def _settle_worker() -> None:
    """Once per Python worker process, after its first file: ``gc.freeze()``.

    PySpark's daemon runs a full ``gc.collect()`` after every task of a reused worker; with
    PySpark, pandas, PyArrow and SciPy loaded (and the caches the first file fills) that walk
    took about a sixth of the worker's time. Frozen objects are left out of later collections.
    """
    global _GC_FROZEN
    if not _GC_FROZEN:
        import gc

        gc.freeze()
        _GC_FROZEN = True


_THREADS_PINNED = False
_GC_FROZEN = False


def _extracted_rows(
    batches: Iterator[pa.RecordBatch],
    feature_config: FeatureConfig,
    options: ExtractOptions,
    cremad_gender: Mapping[str, str],
) -> Iterator[dict[str, Any]]:
    """The output rows (features or errors) of every listed file in ``batches``, in order."""
    _prepare_worker()
    version = feature_config.version()
    for batch in batches:
        for row in batch.to_pylist():
            yield from _process_row(row, feature_config, version, options, cremad_gender)
            _settle_worker()


def make_extract_fn(
    feature_config: FeatureConfig,
    options: ExtractOptions,
    output_schema: pa.Schema,
    *,
    cremad_gender: Mapping[str, str] | None = None,
    rows_per_batch: int = 32,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` function of the extraction job that hands rows to Spark.

    Parameters
    ----------
    feature_config
        What decides the feature values (a small frozen dataclass, cheap to ship to the workers).
    options
        Rows to write besides the features (waveform, augmented copies).
    output_schema
        Arrow schema of :data:`OUTPUT_DDL` (``pyspark.sql.pandas.types.to_arrow_schema``).
    cremad_gender
        CREMA-D actor id → gender, from ``VideoDemographics.csv`` when the input has one.
    rows_per_batch
        Output rows per Arrow batch: audio rows are large, so batches stay small.
    """
    genders = dict(cremad_gender or {})

    def extract_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        out = _Columns()
        for row in _extracted_rows(batches, feature_config, options, genders):
            out.add(**row)
            if len(out) >= rows_per_batch:
                yield out.to_batch(output_schema)
                out = _Columns()
                fault_point("extract")
        if len(out):
            yield out.to_batch(output_schema)
        fault_point("extract")

    return extract_partition


def table_schemas(output_schema: pa.Schema) -> dict[str, pa.Schema]:
    """Arrow schemas of the ``features`` files (without the ``corpus`` partition column) and
    of the ``errors`` files, taken from the Arrow schema of :data:`OUTPUT_DDL`."""
    feature_names = [name.split()[0] for name in FEATURE_COLUMNS_DDL.split(", ") if name.split()[0] != "corpus"]
    return {
        "features": pa.schema([output_schema.field(name) for name in feature_names]),
        "errors": pa.schema([output_schema.field(name) for name in ERROR_COLUMNS]),
    }


class _TaskFiles:
    """The Parquet files one task writes under a local staging folder, one per table and corpus.

    Each file is written under a hidden name (``.part-*``, ignored by Spark and PyArrow readers)
    and renamed when complete, so a task that dies leaves no visible half-file behind.
    """

    def __init__(self, staging_dir: str, schemas: Mapping[str, pa.Schema], compression: str) -> None:
        from pyspark import TaskContext

        context = TaskContext.get()
        task = f"{context.partitionId():05d}-{context.taskAttemptId()}" if context is not None else "00000-0"
        self._tag = f"part-{task}-{uuid.uuid4().hex[:8]}"
        self._staging_dir = staging_dir
        self._schemas = schemas
        self._compression = compression
        self._open: dict[tuple[str, str | None], tuple[pq.ParquetWriter, str, str, list[int]]] = {}

    def write(self, table: str, corpus: str | None, columns: "_Columns") -> None:
        """Append ``columns`` (rows of one table, one corpus for features) as a row group."""
        key = (table, corpus if table == "features" else None)
        if key not in self._open:
            folder = os.path.join(table, partition_folder("corpus", corpus)) if table == "features" else table
            suffix = "" if self._compression == "none" else f".{self._compression}"
            relative = os.path.join(folder, f"{self._tag}{suffix}.parquet")
            hidden = os.path.join(self._staging_dir, folder, "." + os.path.basename(relative))
            os.makedirs(os.path.dirname(hidden), exist_ok=True)
            schema = self._schemas[table]
            writer = pq.ParquetWriter(
                hidden, schema, compression=self._compression,
                use_dictionary=[name for name in _DICTIONARY_COLUMNS if name in schema.names],
                write_statistics=[name for name in schema.names if not pa.types.is_nested(schema.field(name).type)],
            )
            self._open[key] = (writer, hidden, relative, [0, 0])
        writer, _, _, counts = self._open[key]
        writer.write_batch(columns.to_batch(self._schemas[table]))
        counts[0] += len(columns)
        counts[1] += sum(tag is None for tag in columns.scalars["augmentation"])

    def close(self) -> list[tuple[str, str, int, int]]:
        """Finish every file and return the receipts ``(table_name, file, rows, clips)``."""
        receipts = []
        for (table, _), (writer, hidden, relative, (rows, clips)) in self._open.items():
            writer.close()
            os.replace(hidden, os.path.join(self._staging_dir, relative))
            receipts.append((table, relative, rows, clips if table == "features" else 0))
        self._open.clear()
        return receipts

    def abort(self) -> None:
        """Close and delete the unfinished files."""
        for writer, hidden, _, _ in self._open.values():
            try:
                writer.close()
            finally:
                if os.path.exists(hidden):
                    os.remove(hidden)
        self._open.clear()


def make_extract_write_fn(
    feature_config: FeatureConfig,
    options: ExtractOptions,
    output_schema: pa.Schema,
    *,
    staging_dir: str,
    compression: str = "snappy",
    cremad_gender: Mapping[str, str] | None = None,
    rows_per_batch: int = 32,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` function that writes the tables itself and yields receipts.

    Each task writes ``staging_dir/features/corpus=<value>/part-<partition>-<attempt>-<id>.parquet``
    and ``staging_dir/errors/part-*.parquet`` (the layout of Spark's partitioned writer) and
    yields one :data:`RECEIPT_DDL` row per finished file. Only the receipts of successful task
    attempts reach the driver, which removes every other file (see
    :func:`ser_udfs.spark.io.keep_received_files`).

    Parameters
    ----------
    staging_dir
        Local folder every worker can write to (the job's staging folder).
    compression
        Parquet codec: ``snappy``, ``zstd``, ``gzip`` or ``none``.

    The other parameters are those of :func:`make_extract_fn`; ``rows_per_batch`` rows make one
    Parquet row group.
    """
    genders = dict(cremad_gender or {})
    schemas = table_schemas(output_schema)
    receipt_schema = pa.schema(
        [("table_name", pa.string()), ("file", pa.string()), ("rows", pa.int64()), ("clips", pa.int64())]
    )

    def extract_and_write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        files = _TaskFiles(staging_dir, schemas, compression)
        pending: dict[tuple[str, str | None], _Columns] = {}
        try:
            for row in _extracted_rows(batches, feature_config, options, genders):
                table = row["table_kind"]
                key = (table, row["corpus"] if table == "features" else None)
                columns = pending.setdefault(key, _Columns())
                columns.add(**row)
                if len(columns) >= rows_per_batch:
                    files.write(table, key[1], pending.pop(key))
                    fault_point("extract")
            for (table, corpus), columns in pending.items():
                files.write(table, corpus, columns)
            receipts = files.close()
        except BaseException:
            files.abort()
            raise
        fault_point("extract")
        yield pa.RecordBatch.from_pylist(
            [dict(zip(receipt_schema.names, receipt)) for receipt in receipts], schema=receipt_schema
        )

    return extract_and_write_partition


def _process_row(
    row: dict[str, Any],
    config: FeatureConfig,
    version: str,
    options: ExtractOptions,
    cremad_gender: Mapping[str, str],
) -> Iterator[dict[str, Any]]:
    """Output rows of one listed file: its feature rows, or one error row."""
    path = row["path"]
    base: dict[str, Any] = {"path": path, "corpus": "unknown"}
    try:
        info = clip_info_for(row, cremad_gender)
        base.update(
            corpus=info.corpus, speaker=info.speaker, gender=info.gender, label=info.label,
            raw_label=info.raw_label, meta=info.meta,
        )
        if row.get("listing_error"):
            raise listing_clip_error(row["listing_error"])
        source = row["content"] if row["content"] is not None else local_path(path)
        if source is None:
            raise ClipError("read", f"cannot open {path} from Python and Spark did not read it")
        clip_id = clip_id_for(path)
        audio_info, clips = extract_file(source, clip_id, config, options)
    except ClipError as exc:
        yield {**base, "error_kind": exc.kind, "error_message": exc.message, "table_kind": "errors"}
        return
    except Exception as exc:  # one bad file never fails the job
        log.warning("unexpected error on %s", path, exc_info=True)
        yield {
            **base, "error_kind": "internal", "error_message": f"{type(exc).__name__}: {exc}", "table_kind": "errors",
        }
        return
    for index, clip in enumerate(clips):
        yield {
            **base,
            "clip_id": clip_id if index == 0 else f"{clip_id}#aug{index}",
            "augmentation": clip.augmentation,
            "source_sample_rate": audio_info.sample_rate,
            "source_channels": audio_info.channels,
            "source_duration_s": audio_info.duration_s,
            "features": clip.features,
            "waveform": clip.waveform,
            "feature_config_version": version,
            "table_kind": "features",
        }
