"""The driver side of the extraction job: its config, its input rows and its two ways of writing.

:func:`extraction_inputs` turns the job's inputs (folders, globs, URIs) and an optional labels
manifest into rows of :data:`ser_udfs.spark.extract.INPUT_DDL`; :func:`extract_tables` runs the
workers on them and writes ``features`` and ``errors`` into the run's staging folder, either by
the Python workers themselves (local outputs in local mode) or by Spark's Parquet writer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from ser_udfs.audio.augment import AugmentConfig
from ser_udfs.corpora import load_cremad_demographics, parse_manifest
from ser_udfs.errors import UserError
from ser_udfs.settings import to_dict
from ser_udfs.features.compute import compute_features_batch, stats_names
from ser_udfs.features.egemaps import egemaps_names
from ser_udfs.features.config import (
    AudioConfig, EgemapsConfig, FeatureConfig, MelConfig, MfccConfig, StatsConfig, ZcrConfig,
)
from ser_udfs.features.extract_file import ExtractOptions
from ser_udfs.spark.extract import (
    ERROR_COLUMNS, ERRORS_DDL, INPUT_DDL, OUTPUT_DDL, RECEIPT_DDL, make_extract_fn, make_extract_write_fn,
    table_schemas,
)
from ser_udfs.spark.incremental import TableSpec
from ser_udfs.spark.io import (
    OutputDir, audio_files, file_stats, keep_received_files, list_files, spark_reads_content,
)
from ser_udfs.spark.listing import local_path, local_uri
from ser_udfs.spark.path_checks import check_manifest_paths
from ser_udfs.spark.progress import JobProgress

log = logging.getLogger(__name__)

#: CREMA-D's table of actor genders, read when an input holds it.
DEMOGRAPHICS_NAME = "VideoDemographics.csv"
#: The tables of an extraction output.
TABLES = ("features", "errors")
#: How they are written, for incremental runs.
TABLE_SPECS = (TableSpec("features", partition_by=("corpus",)), TableSpec("errors"))


@dataclass(frozen=True)
class OutputSection:
    """``[output]`` of ``conf/features.toml``.

    ``writer``: ``python`` has the Python workers write the Parquet files with PyArrow (local
    outputs only), ``spark`` hands the rows to Spark's Parquet writer (any file system),
    ``auto`` picks ``python`` for local outputs. ``compression`` is the Parquet codec.
    """

    keep_waveform: bool = False
    rows_per_batch: int = 32
    writer: Literal["auto", "python", "spark"] = "auto"
    compression: Literal["snappy", "zstd", "gzip", "none"] = "snappy"

    def __post_init__(self) -> None:
        if self.rows_per_batch < 1:
            raise ValueError("output.rows_per_batch must be at least 1")


@dataclass(frozen=True)
class ReadSection:
    """``[read]`` of ``conf/features.toml``: how the workers get the bytes of each file.

    ``manifest_schemes`` lists URI schemes a manifest may use besides local paths and the
    manifest's own file system; ``manifest_roots``, when not empty, the folders every manifest
    path must lie in (see :func:`ser_udfs.spark.path_checks.check_manifest_paths`).
    """

    mode: Literal["auto", "python", "spark"] = "auto"
    files_per_partition: int = 256
    manifest_schemes: tuple[str, ...] = ()
    manifest_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.files_per_partition < 1:
            raise ValueError("read.files_per_partition must be at least 1")


@dataclass(frozen=True)
class AugmentSection:
    """``[augment]`` of ``conf/features.toml``: how many copies, and ``[augment.settings]``."""

    variants: int = 0
    seed: int = 0
    settings: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.variants < 0:
            raise ValueError("augment.variants (--augment) must be 0 or more")


@dataclass(frozen=True)
class ExtractJobConfig:
    """The whole config of the extraction job (``conf/features.toml``)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    mfcc: MfccConfig = field(default_factory=MfccConfig)
    zcr: ZcrConfig = field(default_factory=ZcrConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    egemaps: EgemapsConfig = field(default_factory=EgemapsConfig)
    output: OutputSection = field(default_factory=OutputSection)
    read: ReadSection = field(default_factory=ReadSection)
    augment: AugmentSection = field(default_factory=AugmentSection)

    @property
    def features(self) -> FeatureConfig:
        """The part of the config that decides feature values (the sections of :class:`FeatureConfig`)."""
        return FeatureConfig(**{section.name: getattr(self, section.name) for section in fields(FeatureConfig)})

    @property
    def options(self) -> ExtractOptions:
        """The part that decides which rows are written."""
        return ExtractOptions(
            keep_waveform=self.output.keep_waveform,
            augment_variants=self.augment.variants,
            augment_config=self.augment.settings,
            augment_seed=self.augment.seed,
        )


@dataclass(frozen=True)
class ExtractionInputs:
    """What the workers get: one row per listed file or manifest entry, and what goes with them.

    Attributes
    ----------
    rows
        Rows of :data:`ser_udfs.spark.extract.INPUT_DDL`; a file both listed and in the manifest
        appears once, labelled by the manifest.
    cremad_gender
        CREMA-D actor id → gender, from every ``VideoDemographics.csv`` among the inputs.
    with_content
        Whether Spark read the files' bytes (``content``), else the workers open them by path.
    """

    rows: DataFrame
    cremad_gender: dict[str, str]
    with_content: bool


@dataclass(frozen=True)
class ExtractionCounts:
    """Rows the workers wrote: feature rows (clips and augmented copies), clips, error rows."""

    feature_rows: int
    clips: int
    errors: int

    def reconcile(self, files_listed: int, skipped: int = 0) -> dict[str, int]:
        """The ``counts`` of the manifest; every listed file is skipped (an incremental run: covered by
        an earlier one), a clip or an error, or this raises."""
        if skipped + self.clips + self.errors != files_listed:
            raise RuntimeError(
                f"counts do not reconcile: {files_listed} files listed, {skipped} skipped, {self.clips} feature rows, "
                f"{self.errors} errors"
            )
        return {
            "files_listed": files_listed,
            "files_skipped": skipped,
            "feature_rows": self.feature_rows,
            "clips": self.clips,
            "augmented_rows": self.feature_rows - self.clips,
            "errors": self.errors,
        }


def extraction_inputs(
    spark: SparkSession, inputs: Sequence[str], manifest: str | None, read: ReadSection, *, with_stats: bool = False
) -> ExtractionInputs:
    """List ``inputs`` (labelled by their names) and read ``manifest`` (labelled by it) into input rows,
    with each file's ``size`` and ``modification_time_ms`` when ``with_stats`` (for incremental runs).

    No cache: the listing is a table of paths held by the driver (a local relation), cheaper to
    rescan than to cache, and caching the bytes of every file (``read.mode=spark``) would fill memory.
    """
    with_content = spark_reads_content(read.mode, inputs)
    frames = []
    cremad_gender: dict[str, str] = {}
    if inputs:
        listed = list_files(spark, inputs, with_content=with_content, with_stats=with_stats)
        cremad_gender = _cremad_genders(spark, listed)
        frames.append(_name_labelled(audio_files(listed)))
    if manifest:
        manifest_rows = _manifest_rows(spark, manifest, read, with_stats=with_stats)
        if frames:
            frames[0] = frames[0].join(manifest_rows.select("path"), "path", "left_anti")
        frames.append(manifest_rows)
    rows = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    return ExtractionInputs(rows, cremad_gender, with_content)


def output_identity(config: ExtractJobConfig) -> str:
    """What every row of an incremental output must share: the feature config version and a digest
    of the options that decide which rows a file gives (waveforms kept, augmentation)."""
    options = json.dumps(to_dict(config.options), sort_keys=True, default=str)
    return f"{config.features.version()}+{hashlib.sha1(options.encode()).hexdigest()[:8]}"


def staged_tables(spark: SparkSession, staging: str) -> dict[str, DataFrame]:
    """The tables staged in ``staging`` (``features`` empty when every file was an error)."""
    staged = OutputDir(spark, staging)
    errors = spark.read.parquet(staged.child("errors"))
    features = spark.read.parquet(staged.child("features")) if staged.exists("features") else \
        spark.createDataFrame([], "path string")
    return {"features": features, "errors": errors}


#: The Parquet summary file of the features table: its schema and what its columns hold.
TABLE_METADATA_NAME = "_common_metadata"


def features_metadata(config: FeatureConfig) -> dict[str, str]:
    """Key-value metadata of the features table (JSON values): the feature config and its version,
    the name of each ``stats`` (and ``egemaps``) value, and the shape of each map column."""
    shapes = {name: list(value.shape[1:]) for name, value in
              compute_features_batch(np.zeros((1, config.audio.clip_samples), np.float32),
                                     config.audio.target_sample_rate_hz, config).items()
              if name not in ("stats", "egemaps")}
    egemaps = {"ser_spark.egemaps_names": json.dumps(egemaps_names())} if config.egemaps.enabled else {}
    return {
        **egemaps,
        "ser_spark.feature_config": json.dumps(config.to_dict(), sort_keys=True),
        "ser_spark.feature_config_version": config.version(),
        "ser_spark.stats_names": json.dumps(stats_names(config)),
        "ser_spark.shapes": json.dumps(shapes, sort_keys=True),
    }


def write_features_metadata(spark: SparkSession, staging: str, config: FeatureConfig) -> None:
    """``staging/features/_common_metadata``: the files' Arrow schema with :func:`features_metadata`
    (pyarrow, DuckDB and pandas read it; Spark skips ``_`` files), when features were staged."""
    staged = OutputDir(spark, staging)
    if not staged.exists("features"):
        return
    schema = table_schemas(to_arrow_schema(StructType.fromDDL(OUTPUT_DDL)))["features"]
    sink = pa.BufferOutputStream()
    pq.write_metadata(schema.with_metadata(features_metadata(config)), sink)
    staged.write_bytes(f"features/{TABLE_METADATA_NAME}", sink.getvalue().to_pybytes())


def partitions_for(files: int, *, cores: int, files_per_partition: int) -> int:
    """Whole waves of equal tasks, none above ``files_per_partition``: no core idles through a short last
    wave (at least one wave, also for no files)."""
    return cores * max(1, -(-files // (cores * files_per_partition)))


def choose_writer(spark: SparkSession, output_uri: str, requested: Literal["auto", "python", "spark"]) -> str:
    """Who writes the Parquet files (``output.writer``): ``"python"`` or ``"spark"``.

    The Python workers can write the driver's local folder only when they run beside it
    (a local output in local mode); ``python`` is refused otherwise, before anything is written.
    """
    python_possible = local_path(output_uri) is not None and spark.sparkContext.master.startswith("local")
    if requested == "python" and not python_possible:
        raise UserError(
            f"output.writer=python needs a local output folder and a local master, not {output_uri} "
            f"on {spark.sparkContext.master}; use output.writer=auto"
        )
    return "python" if requested == "python" or (requested == "auto" and python_possible) else "spark"


def extract_tables(
    inputs: ExtractionInputs, config: ExtractJobConfig, *, staging: str, writer: str, partitions: int, files: int
) -> ExtractionCounts:
    """Extract every input row (``files`` of them) into ``features`` and ``errors`` inside ``staging``,
    logging the progress (:class:`~ser_udfs.spark.progress.JobProgress`).

    ``writer`` comes from :func:`choose_writer`. The counts are read from the staged tables,
    the files that will be moved into place; with the Python writer they must also match the
    rows the successful tasks reported, or files were lost.
    """
    rows = inputs.rows.select(*[column.split(" ")[0] for column in INPUT_DDL.split(", ")]).repartition(partitions)
    spark = inputs.rows.sparkSession
    with JobProgress(spark.sparkContext, "extraction", files=files, tasks=partitions):
        if writer == "python":
            reported = _extract_python_writer(rows, config, inputs.cremad_gender, local_path(staging))
        else:
            _extract_spark_writer(rows, config, inputs.cremad_gender, staging)
    write_features_metadata(spark, staging, config.features)
    counts = _count_staged(spark, staging)
    if writer == "python" and counts != reported:
        raise RuntimeError(
            f"the staged tables in {staging} hold {counts} but the tasks wrote {reported}: files were lost; rerun the job"
        )
    return counts


def _count_staged(spark: SparkSession, staging: str) -> ExtractionCounts:
    """Feature rows, clips (rows without augmentation) and errors of the tables in ``staging``."""
    tables = staged_tables(spark, staging)
    features = tables["features"]
    if "augmentation" in features.columns:
        feature_rows, clips = features.count(), features.where(F.col("augmentation").isNull()).count()
    else:
        feature_rows = clips = 0
    return ExtractionCounts(feature_rows, clips, tables["errors"].count())


def _name_labelled(listed: DataFrame) -> DataFrame:
    """Listed files as input rows labelled by their names (no manifest columns)."""
    manifest_columns = (
        ("manifest_corpus", "string"), ("manifest_speaker", "string"), ("manifest_gender", "string"),
        ("manifest_label", "string"), ("manifest_raw_label", "string"), ("manifest_meta", "map<string,string>"),
    )
    return listed.select(
        "path", "content", *[F.lit(None).cast(kind).alias(name) for name, kind in manifest_columns],
        F.lit("name").alias("labelled_by"), "listing_error", "size", "modification_time_ms",
    )


def _manifest_rows(spark: SparkSession, manifest: str, read: ReadSection, *, with_stats: bool) -> DataFrame:
    """The user's manifest as input rows, labelled by the manifest, each file spelled as the listing spells it.

    Refuses (:class:`UserError`) a manifest that lists a file twice, or a path on a scheme or
    outside the roots that ``read`` does not allow.
    """
    try:
        text = "\n".join(row.value for row in spark.read.text(manifest).collect())
    except Exception as exc:  # AnalysisException and Hadoop I/O errors
        raise UserError(f"cannot read manifest {manifest}: {str(exc).splitlines()[0]}") from None
    local = local_path(manifest)
    base = os.path.dirname(os.path.abspath(local)) if local is not None else manifest.rsplit("/", 1)[0]
    try:
        entries = parse_manifest(text, base=base)
    except ValueError as exc:
        raise UserError(f"manifest {manifest}: {exc}") from None
    check_manifest_paths(
        [entry.path for entry in entries], manifest=manifest, extra_schemes=read.manifest_schemes,
        roots=read.manifest_roots,
    )
    rows = [
        (
            local_uri(entry.path) if local_path(entry.path) is not None else entry.path,
            None, entry.corpus, entry.speaker, entry.gender, entry.label, entry.raw_label, entry.meta, "manifest", None,
        )
        for entry in entries
    ]
    frame = spark.createDataFrame(rows, schema=INPUT_DDL)
    if not with_stats:
        return frame.withColumn("size", F.lit(None).cast("bigint")).withColumn("modification_time_ms", F.lit(None).cast("bigint"))
    return frame.join(file_stats(spark, [row[0] for row in rows]), "path", "left")


def _cremad_genders(spark: SparkSession, listed: DataFrame) -> dict[str, str]:
    """Actor genders from every ``VideoDemographics.csv`` found among the inputs."""
    genders: dict[str, str] = {}
    for row in listed.where(F.col("path").endswith("/" + DEMOGRAPHICS_NAME)).select("path").collect():
        text = "\n".join(line.value for line in spark.read.text(row.path).collect())
        genders.update(load_cremad_demographics(text))
        log.info("CREMA-D genders from %s (%d actors)", row.path, len(genders))
    return genders


def _extract_python_writer(
    inputs: DataFrame, config: ExtractJobConfig, cremad_gender: dict[str, str], staging_dir: str
) -> ExtractionCounts:
    """Workers write ``features``/``errors`` into the local staging folder; returns what the
    receipts of the successful task attempts report."""
    arrow_schema = to_arrow_schema(StructType.fromDDL(OUTPUT_DDL))
    extract = make_extract_write_fn(
        config.features, config.options, arrow_schema, staging_dir=staging_dir,
        compression=config.output.compression, cremad_gender=cremad_gender,
        rows_per_batch=config.output.rows_per_batch,
    )
    receipts = inputs.mapInArrow(extract, RECEIPT_DDL).collect()
    keep_received_files(staging_dir, [receipt.file for receipt in receipts])
    if not any(receipt.table_name == "errors" for receipt in receipts):
        errors_dir = os.path.join(staging_dir, "errors")
        os.makedirs(errors_dir, exist_ok=True)
        empty = table_schemas(arrow_schema)["errors"].empty_table()
        pq.write_table(empty, os.path.join(errors_dir, "part-00000.parquet"), compression=config.output.compression)
    return ExtractionCounts(
        feature_rows=sum(r.rows for r in receipts if r.table_name == "features"),
        clips=sum(r.clips for r in receipts if r.table_name == "features"),
        errors=sum(r.rows for r in receipts if r.table_name == "errors"),
    )


def _extract_spark_writer(
    inputs: DataFrame, config: ExtractJobConfig, cremad_gender: dict[str, str], staging: str
) -> None:
    """Spark writes the rows to ``staging/features`` and ``staging/errors`` (any file system)."""
    spark = inputs.sparkSession
    output_schema = StructType.fromDDL(OUTPUT_DDL)
    extract = make_extract_fn(
        config.features, config.options, to_arrow_schema(output_schema),
        cremad_gender=cremad_gender, rows_per_batch=config.output.rows_per_batch,
    )
    rows = inputs.mapInArrow(extract, output_schema)
    writer = rows.write.mode("overwrite").option("compression", config.output.compression)
    for column in ("log_mel", "mfcc", "zcr", "stats", "waveform"):
        # Float arrays never repeat: skip parquet-mr's dictionary attempt on them.
        writer = writer.option(f"parquet.enable.dictionary#{column}.list.element", "false")
    rows_staging = staging.rstrip("/") + "/rows"
    writer.partitionBy("table_kind", "corpus").parquet(rows_staging)
    staged_rows, staged = OutputDir(spark, rows_staging), OutputDir(spark, staging)
    if staged_rows.exists("table_kind=features"):
        staged.move_into_place(staged_rows.child("table_kind=features"), "features")
    if staged_rows.exists("table_kind=errors"):
        errors = spark.read.parquet(staged_rows.child("table_kind=errors")).select(*ERROR_COLUMNS)
    else:
        errors = spark.createDataFrame([], ERRORS_DDL)
    errors.coalesce(1).write.mode("overwrite").option("compression", config.output.compression).parquet(
        staged.child("errors")
    )
