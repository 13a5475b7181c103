"""Pandas UDFs a data engineer composes in their own Spark code and SQL: the jobs' per-clip steps.

Each function builds an iterator-of-batches pandas UDF over a column of file bytes (``content``
of ``spark.read.format("binaryFile")``), so per-worker set-up happens once per task, not per row,
and batches stay bounded (``spark.sql.execution.arrow.maxRecordsPerBatch``). Every step is the
one the jobs run (:func:`ser_udfs.features.extract_file.extract_file`: decode, preprocess,
features), so a UDF's values equal the extraction job's for the same file. A row that cannot be
used never fails the query: its values are null and its ``error`` struct says why (``kind``,
``message``: the kinds of the jobs' errors tables).

- :func:`waveform_udf`: the preprocessed waveform (16 kHz, trimmed, fixed length);
- :func:`features_udf`: log-mel, MFCC, ZCR (flattened, with their shapes) and the stats vector;
- :func:`clip_emotion_udf`: a model's calibrated probabilities per clip, from a factory made on
  the driver (``training.udfs.emotion`` makes one from a bundle folder: ``ser_udfs`` never
  knows what a model is);
- :func:`embeddings_udf`: a frozen Hugging Face encoder's pooled hidden states of a waveform
  column (the embeddings job's values, from the same embedding function).

``docs/UDFS.md`` shows each in PySpark and SQL.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd

from ser_udfs.encoders.pooling import EmbeddingConfig, plan_embeddings
from ser_udfs.errors import ClipError, UserError
from ser_udfs.features.compute import compute_features_batch, stats_length
from ser_udfs.features.config import FeatureConfig
from ser_udfs.features.extract_file import ExtractOptions, extract_file
from ser_udfs.spark.model_cache import cached_model

log = logging.getLogger(__name__)

ERROR_DDL = "struct<kind:string,message:string>"
WAVEFORM_DDL = f"struct<waveform:array<float>,source_sample_rate:int,source_duration_s:double,error:{ERROR_DDL}>"
FEATURES_DDL = (
    "struct<log_mel:array<float>,log_mel_shape:array<int>,mfcc:array<float>,mfcc_shape:array<int>,"
    f"zcr:array<float>,zcr_shape:array<int>,stats:array<float>,egemaps:array<float>,error:{ERROR_DDL}>"
)
EMOTION_DDL = f"struct<label:string,confidence:double,probabilities:map<string,double>,error:{ERROR_DDL}>"
EMBEDDING_DDL = f"struct<embedding:array<float>,error:{ERROR_DDL}>"
_MAPS = ("log_mel", "mfcc", "zcr")


class ClipModel(Protocol):
    """What :func:`clip_emotion_udf` needs from a model (a loaded bundle is one)."""

    labels: tuple[str, ...]
    feature_config: FeatureConfig

    def predict_proba(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated ``[n, len(labels)]`` for the arrays of ``compute_features_batch`` of ``n`` clips."""
        ...


#: Rows a UDF works on at once, whatever the Arrow batch it is given: bounded memory per worker.
CHUNK_ROWS = 32


def _chunks(batches: Iterator[Any]) -> Iterator[Any]:
    """Each Arrow batch (a Series, or a DataFrame for a struct column) in slices of at most
    :data:`CHUNK_ROWS` rows; an iterator UDF may yield its output in smaller batches than its input."""
    for batch in batches:
        for start in range(0, len(batch), CHUNK_ROWS):
            yield batch.iloc[start : start + CHUNK_ROWS]


def _check_source(source: str, allowed: tuple[str, ...] = ("bytes", "waveform")) -> None:
    if source not in allowed:
        raise UserError(f"source={source!r}: this UDF takes {' or '.join(map(repr, allowed))} (file contents, "
                        "preprocessed clips" + (", the features struct of features_udf" if "features" in allowed else "")
                        + ")")


def _error(exc: Exception) -> dict[str, str]:
    if isinstance(exc, ClipError):
        return {"kind": exc.kind, "message": exc.message}
    log.warning("unexpected error in a UDF row", exc_info=True)
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}


def _clips(values: pd.Series, config: FeatureConfig, *, keep_waveform: bool, source: str = "bytes"
           ) -> Iterator[tuple[Any, dict[str, Any] | None, dict[str, str] | None]]:
    """``(audio info, the clip's features, error)`` of each row of file bytes, or with ``source =
    "waveform"`` of each preprocessed clip (``config.audio.clip_samples`` at its rate; info None)."""
    if source == "waveform":
        yield from _waveform_clips(values, config)
        return
    options = ExtractOptions(keep_waveform=keep_waveform)
    for content in values:
        if content is None:
            yield None, None, {"kind": "read", "message": "the row holds no file bytes (content is null)"}
            continue
        try:
            info, (clip, *_) = extract_file(bytes(content), "", config, options)
        except Exception as exc:  # one bad row never fails the query
            yield None, None, _error(exc)
            continue
        yield info, {**clip.features, "waveform": clip.waveform}, None


def _waveform_clips(waveforms: pd.Series, config: FeatureConfig
                    ) -> Iterator[tuple[None, dict[str, Any] | None, dict[str, str] | None]]:
    """Features of preprocessed clips, computed as one batch; a null or wrong-length clip gets an error."""
    samples = config.audio.clip_samples
    errors: list[dict[str, str] | None] = []
    for value in waveforms:
        if value is None:
            errors.append({"kind": "empty", "message": "the waveform is null (its clip could not be used)"})
        elif len(value) != samples:
            errors.append({"kind": "unsupported", "message": (
                f"a waveform of {len(value)} samples, not the {samples} of a preprocessed "
                f"{config.audio.clip_seconds} s clip at {config.audio.target_sample_rate_hz} Hz; give the waveform of "
                "waveform_udf, or the file bytes")})
        else:
            errors.append(None)
    good = [index for index, error in enumerate(errors) if error is None]
    clips = np.stack([np.asarray(waveforms.iloc[index], dtype=np.float32) for index in good]) if good else None
    features = compute_features_batch(clips, config.audio.target_sample_rate_hz, config) if good else {}
    position = {index: rank for rank, index in enumerate(good)}
    for index, error in enumerate(errors):
        if error is not None:
            yield None, None, error
        else:
            rank = position[index]
            yield None, {**{name: values[rank] for name, values in features.items()}, "waveform": clips[rank]}, None


def _feature_clips(rows: pd.DataFrame, config: FeatureConfig
                   ) -> Iterator[tuple[None, dict[str, Any] | None, dict[str, str] | None]]:
    """The clips of a features struct column (:data:`FEATURES_DDL`'s fields, or the features table's
    columns in a struct): each map unfolded by its shape; a row without stats gets its error, one
    whose stats are not ``config``'s length an ``unsupported`` one (features of another config)."""
    expected = stats_length(config)
    for row in rows.itertuples(index=False):
        stats = getattr(row, "stats", None)
        if stats is None:
            error = getattr(row, "error", None)
            yield None, None, error if isinstance(error, dict) and error.get("kind") else {
                "kind": "empty", "message": "the row holds no features (its clip could not be used)"}
            continue
        if len(stats) != expected:
            yield None, None, {"kind": "unsupported", "message": (
                f"{len(stats)} stats values, not the {expected} of the model's feature config: features of another "
                "config; give the file bytes, or features computed with the model's feature config")}
            continue
        clip = {"stats": np.asarray(stats, dtype=np.float32)}
        if (egemaps := getattr(row, "egemaps", None)) is not None:
            clip["egemaps"] = np.asarray(egemaps, dtype=np.float32)
        for name in _MAPS:
            values, shape = getattr(row, name, None), getattr(row, f"{name}_shape", None)
            if values is not None and shape is not None:
                clip[name] = np.asarray(values, dtype=np.float32).reshape([int(size) for size in shape])
        yield None, clip, None


def waveform_udf(config: FeatureConfig) -> Any:
    """A pandas UDF: file bytes → :data:`WAVEFORM_DDL` (the preprocessed clip at the config's rate)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(WAVEFORM_DDL)  # type: ignore[call-overload]
    def waveform(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in _chunks(batches):
            rows = []
            for info, clip, error in _clips(contents, config, keep_waveform=True):
                rows.append({
                    "waveform": None if clip is None else clip["waveform"],
                    "source_sample_rate": None if info is None else info.sample_rate,
                    "source_duration_s": None if info is None else info.duration_s,
                    "error": error,
                })
            yield pd.DataFrame(rows, columns=["waveform", "source_sample_rate", "source_duration_s", "error"])

    return waveform


def features_udf(config: FeatureConfig, *, source: str = "bytes") -> Any:
    """A pandas UDF: file bytes (``source="waveform"``: a preprocessed clip, as :func:`waveform_udf`
    gives) → :data:`FEATURES_DDL`, the features table's columns for the clip."""
    from pyspark.sql.functions import pandas_udf

    _check_source(source)
    columns = [column for name in _MAPS for column in (name, f"{name}_shape")] + ["stats", "egemaps", "error"]

    @pandas_udf(FEATURES_DDL)  # type: ignore[call-overload]
    def features(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in _chunks(batches):
            rows = []
            for _, clip, error in _clips(contents, config, keep_waveform=False, source=source):
                row: dict[str, Any] = dict.fromkeys(columns)
                row["error"] = error
                if clip is not None:
                    for name in _MAPS:
                        row[name] = clip[name].ravel()
                        row[f"{name}_shape"] = list(clip[name].shape)
                    row["stats"] = clip["stats"]
                    row["egemaps"] = clip.get("egemaps")  # null unless config.egemaps.enabled
                rows.append(row)
            yield pd.DataFrame(rows, columns=columns)

    return features


def clip_emotion_udf(make_model: Callable[[], ClipModel], *, model_id: str, feature_config: FeatureConfig,
                     labels: Sequence[str], source: str = "bytes") -> Any:
    """A pandas UDF: file bytes → :data:`EMOTION_DDL`, one clip's label, confidence and probabilities.

    ``source="waveform"`` takes preprocessed clips (:func:`waveform_udf`), ``source="features"`` a
    features struct (:func:`features_udf`'s, or ``F.struct(...)`` of a features table's columns:
    maps, shapes and stats; computed with ``feature_config``), for models that need no waveform.

    Parameters
    ----------
    make_model
        Zero-argument, picklable factory of the model, called once per Python worker
        (:func:`ser_udfs.spark.model_cache.cached_model` under ``model_id``).
    feature_config, labels
        The model's (its features are computed with ``feature_config``; ``labels`` name the probabilities).
    """
    from pyspark.sql.functions import pandas_udf

    _check_source(source, ("bytes", "waveform", "features"))
    labels = tuple(labels)

    def emotions(batches: Iterator[Any]) -> Iterator[pd.DataFrame]:
        model = cached_model(model_id, make_model)
        for values in _chunks(batches):
            results = list(_feature_clips(values, feature_config) if source == "features" else
                           _clips(values, feature_config, keep_waveform=True, source=source))
            good = [index for index, (_, clip, _) in enumerate(results) if clip is not None]
            rows = [{"label": None, "confidence": None, "probabilities": None, "error": error}
                    for _, _, error in results]
            if good:  # the arrays the jobs feed a model: features and the preprocessed clips
                batch = {name: np.stack([results[index][1][name] for index in good])
                         for name in (*_MAPS, "stats", "waveform") if name in results[good[0]][1]}
                probabilities = np.asarray(model.predict_proba(batch), dtype=np.float64)
                for index, row_probabilities in zip(good, probabilities):
                    best = int(np.argmax(row_probabilities))
                    rows[index].update(label=labels[best], confidence=float(row_probabilities[best]),
                                       probabilities=dict(zip(labels, map(float, row_probabilities))))
            yield pd.DataFrame(rows, columns=["label", "confidence", "probabilities", "error"])

    if source == "features":  # a struct column arrives as a DataFrame per batch
        @pandas_udf(EMOTION_DDL)  # type: ignore[call-overload]
        def emotion_of_features(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            yield from emotions(batches)

        return emotion_of_features

    @pandas_udf(EMOTION_DDL)  # type: ignore[call-overload]
    def emotion(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        yield from emotions(batches)

    return emotion


def embeddings_udf(config: EmbeddingConfig, *, sample_rate_hz: int = 16000) -> Any:
    """A pandas UDF: preprocessed waveform (``array<float>`` at ``sample_rate_hz``, e.g. the
    ``waveform`` of :func:`waveform_udf`) → :data:`EMBEDDING_DDL`: the encoder's pooled hidden
    states, flattened ``[vectors, hidden]``, as ``jobs/extract_embeddings.py`` computes them.

    ``config.pretrained`` is a local encoder folder readable at the same path on every worker. A
    null waveform gets an ``empty`` error, one of another length than the batch's first an
    ``unsupported`` one (the encoder takes clips of one length, as the features table holds them).
    """
    from pyspark.sql.functions import pandas_udf

    plan = plan_embeddings(config, sample_rate_hz=sample_rate_hz)
    make_embed_fn, model_id = plan.factory(), plan.model_id

    @pandas_udf(EMBEDDING_DDL)  # type: ignore[call-overload]
    def embeddings(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        embed_fn = cached_model(model_id, make_embed_fn)
        for waveforms in _chunks(batches):
            rows: list[dict[str, Any]] = [{"embedding": None, "error": None} for _ in range(len(waveforms))]
            lengths = [None if value is None else len(value) for value in waveforms]
            length = next((value for value in lengths if value is not None), None)
            present = []
            for index, value in enumerate(lengths):
                if value is None:
                    rows[index]["error"] = {"kind": "empty", "message": "the waveform is null (its clip could not be used)"}
                elif value != length:
                    rows[index]["error"] = {"kind": "unsupported", "message": (
                        f"a waveform of {value} samples among clips of {length}: give preprocessed clips of one length")}
                else:
                    present.append(index)
            if present:
                pooled = embed_fn(np.stack([np.asarray(waveforms.iloc[index], dtype=np.float32) for index in present]))
                for index, vector in zip(present, pooled.reshape(len(pooled), -1)):
                    rows[index]["embedding"] = vector
            yield pd.DataFrame(rows, columns=["embedding", "error"])

    return embeddings
