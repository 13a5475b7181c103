"""Spark wrapper of the per-clip extraction: the ``mapInArrow`` function and the schemas.

The function runs in the Python workers. It receives Arrow batches of listed files (path, the
manifest's labels if any, and the file's bytes when Spark read them) and yields Arrow batches of
feature rows and error rows, tagged by ``table_kind``. Audio arrays go straight into Arrow list
columns, without a pass through pandas objects.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa

from ser_udfs.corpora import ClipInfo, parse_clip_path
from ser_udfs.errors import ClipError
from ser_udfs.extract import ExtractOptions, clip_id_for, extract_file
from ser_udfs.faults import fault_point
from ser_udfs.feature_config import FeatureConfig
from ser_udfs.local_listing import uri_for_local_path

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
    "stats array<float>, waveform array<float>, meta map<string,string>, "
    "feature_config_version string"
)

#: What :func:`make_extract_fn`'s function yields: feature columns plus the error columns.
OUTPUT_DDL = FEATURE_COLUMNS_DDL + ", error_kind string, error_message string, table_kind string"

ERROR_COLUMNS = ("path", "corpus", "speaker", "label", "error_kind", "error_message")
ERRORS_DDL = ", ".join(f"{name} string" for name in ERROR_COLUMNS)

_MAPS = ("log_mel", "mfcc", "zcr")
_FLOAT_LIST = pa.list_(pa.float32())
_INT_LIST = pa.list_(pa.int32())
_META = pa.map_(pa.string(), pa.string())


def local_path(uri: str) -> str | None:
    """The local file-system path of a ``file:`` URI (or a plain path); None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return None


def local_uri(path: str) -> str:
    """``file:`` URI of a local path, spelled as Spark lists files (``file:/a%20b/c.wav``)."""
    return uri_for_local_path(unquote(urlparse(path).path) if path.startswith("file:") else path)


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
            name: [] for name in ("log_mel", "mfcc", "zcr", "stats", "waveform")
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
        columns: dict[str, pa.Array] = {
            name: pa.array(values, type=schema.field(name).type) for name, values in self.scalars.items()
        }
        columns["meta"] = pa.array(self.meta, type=_META)
        for name, values in self.arrays.items():
            columns[name] = _float_lists(values)
        for name, shapes in self.shapes.items():
            columns[f"{name}_shape"] = pa.array(shapes, type=_INT_LIST)
        return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def _float_lists(values: list[np.ndarray | None]) -> pa.Array:
    """Arrow ``list<float>`` of flattened arrays (null where None), built without copies per row."""
    lengths = np.array([0 if v is None else v.size for v in values], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32)
    present = [v.ravel() for v in values if v is not None]
    flat = np.concatenate(present).astype(np.float32, copy=False) if present else np.zeros(0, np.float32)
    mask = pa.array([v is None for v in values], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)


def make_extract_fn(
    feature_config: Mapping[str, Any],
    options: ExtractOptions,
    output_schema: pa.Schema,
    *,
    cremad_gender: Mapping[str, str] | None = None,
    rows_per_batch: int = 32,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Build the ``mapInArrow`` function of the extraction job.

    Parameters
    ----------
    feature_config
        ``FeatureConfig.to_dict()`` (plain data, cheap to ship to the workers).
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
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        config = FeatureConfig.from_dict(feature_config)
        version = config.version()
        out = _Columns()
        for batch in batches:
            for row in batch.to_pylist():
                _process_row(row, config, version, options, genders, out)
                if len(out) >= rows_per_batch:
                    yield out.to_batch(output_schema)
                    out = _Columns()
                    fault_point("extract")
        if len(out):
            yield out.to_batch(output_schema)
        fault_point("extract")

    return extract_partition


def _process_row(
    row: dict[str, Any],
    config: FeatureConfig,
    version: str,
    options: ExtractOptions,
    cremad_gender: Mapping[str, str],
    out: _Columns,
) -> None:
    path = row["path"]
    base = {"path": path, "corpus": "unknown"}
    try:
        info = clip_info_for(row, cremad_gender)
        base.update(
            corpus=info.corpus, speaker=info.speaker, gender=info.gender, label=info.label,
            raw_label=info.raw_label, meta=info.meta,
        )
        if row.get("listing_error"):
            raise ClipError("read", row["listing_error"])
        source = row["content"] if row["content"] is not None else local_path(path)
        if source is None:
            raise ClipError("read", f"cannot open {path} from Python and Spark did not read it")
        clip_id = clip_id_for(path)
        audio_info, clips = extract_file(source, clip_id, config, options)
    except ClipError as exc:
        out.add(**base, error_kind=exc.kind, error_message=exc.message, table_kind="errors")
        return
    except Exception as exc:  # one bad file never fails the job
        log.warning("unexpected error on %s", path, exc_info=True)
        out.add(**base, error_kind="internal", error_message=f"{type(exc).__name__}: {exc}", table_kind="errors")
        return
    for index, clip in enumerate(clips):
        out.add(
            **base,
            clip_id=clip_id if index == 0 else f"{clip_id}#aug{index}",
            augmentation=clip.augmentation,
            source_sample_rate=audio_info.sample_rate,
            source_channels=audio_info.channels,
            source_duration_s=audio_info.duration_s,
            features=clip.features,
            waveform=clip.waveform,
            feature_config_version=version,
            table_kind="features",
        )
