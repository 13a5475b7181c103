"""Extract features from audio collections into a Parquet feature table.

Usage::

    spark-submit jobs/extract_features.py --input /data/RAVDESS --input /data/CREMA-D \\
        --output /tables/ser_features [--manifest labels.csv] [--config conf/features.toml] \\
        [--set mel.n_mels=64 ...] [--augment N]

Writes ``OUTPUT/features`` (partitioned by corpus), ``OUTPUT/errors`` and
``OUTPUT/_manifest.json`` (resolved config, inputs, counts, timings), then ``OUTPUT/_SUCCESS``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from jobs._cli import base_parser, run, setup_logging
from jobs._spark import build_spark
from ser_udfs.corpora import load_cremad_demographics, parse_manifest
from ser_udfs.errors import UserError
from ser_udfs.extract import ExtractJobConfig
from ser_udfs.feature_config import FeatureConfig
from ser_udfs.path_checks import check_manifest_paths, check_output_apart
from ser_udfs.settings import resolve_config, to_dict
from ser_udfs.spark_extract import (
    ERROR_COLUMNS, ERRORS_DDL, INPUT_DDL, OUTPUT_DDL, RECEIPT_DDL, local_path, local_uri, make_extract_fn,
    make_extract_write_fn, table_schemas,
)
from ser_udfs.spark_io import OutputDir, audio_files, keep_received_files, list_files

log = logging.getLogger("ser_spark.extract_features")

DEMOGRAPHICS_NAME = "VideoDemographics.csv"


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(__doc__.split("\n\n")[0], "features.toml")
    parser.add_argument("--input", action="append", default=[], help="directory, glob or URI (repeatable)")
    parser.add_argument("--manifest", help="CSV with columns path,label[,speaker,gender,corpus]")
    parser.add_argument("--output", required=True, help="output folder (local path or URI)")
    parser.add_argument("--augment", type=int, help="augmented copies per clip (overrides augment.variants)")
    args = parser.parse_args(argv)
    if not args.input and not args.manifest:
        parser.error("give at least one --input or a --manifest")
    return args


def _manifest_frame(spark: SparkSession, manifest: str, extra_schemes: Sequence[str]) -> DataFrame:
    """The user's manifest as rows of the extraction input, labelled by the manifest."""
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
    check_manifest_paths([entry.path for entry in entries], manifest=manifest, extra_schemes=extra_schemes)
    rows = [
        (
            local_uri(entry.path) if local_path(entry.path) is not None else entry.path,
            None, entry.corpus, entry.speaker, entry.gender, entry.label, entry.raw_label, entry.meta, "manifest", None,
        )
        for entry in entries
    ]
    return spark.createDataFrame(rows, schema=INPUT_DDL)


def _cremad_genders(spark: SparkSession, listed: DataFrame) -> dict[str, str]:
    """Actor genders from every ``VideoDemographics.csv`` found among the inputs."""
    genders: dict[str, str] = {}
    for row in listed.where(F.col("path").endswith("/" + DEMOGRAPHICS_NAME)).select("path").collect():
        text = "\n".join(line.value for line in spark.read.text(row.path).collect())
        genders.update(load_cremad_demographics(text))
        log.info("CREMA-D genders from %s (%d actors)", row.path, len(genders))
    return genders


def _extract_python_writer(
    inputs: DataFrame,
    feature_config: FeatureConfig,
    config: ExtractJobConfig,
    arrow_schema: pa.Schema,
    cremad_gender: dict[str, str],
    staging_dir: str,
) -> tuple[int, int, int]:
    """Workers write ``features``/``errors`` into the local staging folder; returns the counts
    ``(feature_rows, clips, errors)`` from the receipts of the successful task attempts."""
    extract = make_extract_write_fn(
        feature_config.to_dict(), config.options, arrow_schema, staging_dir=staging_dir,
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
    feature_rows = sum(r.rows for r in receipts if r.table_name == "features")
    clips = sum(r.clips for r in receipts if r.table_name == "features")
    errors = sum(r.rows for r in receipts if r.table_name == "errors")
    return feature_rows, clips, errors


def _extract_spark_writer(
    inputs: DataFrame,
    feature_config: FeatureConfig,
    config: ExtractJobConfig,
    output_schema: StructType,
    cremad_gender: dict[str, str],
    staging: str,
) -> tuple[int, int, int]:
    """Spark writes the rows to ``staging/features`` and ``staging/errors`` (any file system);
    returns the counts ``(feature_rows, clips, errors)`` read back from the files."""
    spark = inputs.sparkSession
    extract = make_extract_fn(
        feature_config.to_dict(), config.options, to_arrow_schema(output_schema),
        cremad_gender=cremad_gender, rows_per_batch=config.output.rows_per_batch,
    )
    rows = inputs.mapInArrow(extract, output_schema)
    writer = rows.write.mode("overwrite").option("compression", config.output.compression)
    for column in ("log_mel", "mfcc", "zcr", "stats", "waveform"):
        # Float arrays never repeat: skip parquet-mr's dictionary attempt on them.
        writer = writer.option(f"parquet.enable.dictionary#{column}.list.element", "false")
    rows_staging = staging.rstrip("/") + "/rows"
    writer.partitionBy("table_kind", "corpus").parquet(rows_staging)
    staged = OutputDir(spark, rows_staging)
    if staged.exists("table_kind=features"):
        OutputDir(spark, staging).move_into_place(staged.child("table_kind=features"), "features")
    if staged.exists("table_kind=errors"):
        errors = spark.read.parquet(staged.child("table_kind=errors")).select(*ERROR_COLUMNS)
    else:
        errors = spark.createDataFrame([], ERRORS_DDL)
    errors_uri = staging.rstrip("/") + "/errors"
    errors.coalesce(1).write.mode("overwrite").option("compression", config.output.compression).parquet(errors_uri)
    features_uri = staging.rstrip("/") + "/features"
    if OutputDir(spark, staging).exists("features"):
        features = spark.read.parquet(features_uri)
        feature_rows = features.count()
        clips = features.where(F.col("augmentation").isNull()).count()
    else:
        feature_rows = clips = 0
    return feature_rows, clips, spark.read.parquet(errors_uri).count()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    overrides = list(args.overrides) + ([f"augment.variants={args.augment}"] if args.augment is not None else [])
    config = resolve_config(ExtractJobConfig, args.config, overrides)
    check_output_apart(args.output, [*args.input, *([args.manifest] if args.manifest else [])])
    feature_config = config.features
    started = time.time()
    spark = build_spark("ser-extract-features")
    output = OutputDir(spark, args.output)
    staging = output.begin()

    remote = any(local_path(uri) is None for uri in args.input)
    with_content = config.read.mode == "spark" or (config.read.mode == "auto" and remote)
    frames = []
    cremad_gender: dict[str, str] = {}
    if args.input:
        # No cache: the listing is a table of paths held by the driver (a local relation), cheaper to
        # rescan than to cache, and caching the bytes of every file (read.mode=spark) would fill memory.
        listed = list_files(spark, args.input, with_content=with_content)
        cremad_gender = _cremad_genders(spark, listed)
        listed_audio = audio_files(listed).select(
            "path", "content", *[F.lit(None).cast(t).alias(c) for c, t in (
                ("manifest_corpus", "string"), ("manifest_speaker", "string"), ("manifest_gender", "string"),
                ("manifest_label", "string"), ("manifest_raw_label", "string"),
                ("manifest_meta", "map<string,string>"),
            )], F.lit("name").alias("labelled_by"), "listing_error",
        )
        frames.append(listed_audio)
    if args.manifest:
        manifest_rows = _manifest_frame(spark, args.manifest, config.read.manifest_schemes)
        if frames:
            frames[0] = frames[0].join(manifest_rows.select("path"), "path", "left_anti")
        frames.append(manifest_rows)
    inputs = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    files_listed = inputs.count()
    if files_listed == 0:
        raise UserError(f"no audio files found in {', '.join(args.input or [args.manifest])}")
    # Whole waves of equal tasks, none above files_per_partition: no core idles through a short last wave.
    cores = spark.sparkContext.defaultParallelism
    partitions = cores * -(-files_listed // (cores * config.read.files_per_partition))
    log.info("%d audio files listed; %d partitions", files_listed, partitions)

    output_schema = StructType.fromDDL(OUTPUT_DDL)
    arrow_schema = to_arrow_schema(output_schema)
    # Workers can write the driver's local folder only when they run beside it (local mode).
    local_staging = local_path(staging) if spark.sparkContext.master.startswith("local") else None
    python_writes = config.output.writer == "python" or (config.output.writer == "auto" and local_staging is not None)
    if python_writes and local_staging is None:
        raise UserError(
            f"output.writer=python needs a local output folder and a local master, not {output.uri} "
            f"on {spark.sparkContext.master}; use output.writer=auto"
        )
    partitioned = inputs.repartition(partitions)
    if python_writes:
        counts = _extract_python_writer(partitioned, feature_config, config, arrow_schema, cremad_gender, local_staging)
    else:
        counts = _extract_spark_writer(partitioned, feature_config, config, output_schema, cremad_gender, staging)
    extracted_s = time.time() - started
    staged = OutputDir(spark, staging)
    for table in ("features", "errors"):
        if staged.exists(table):
            output.move_into_place(staged.child(table), table)
        else:
            output.delete(table)

    feature_rows, original_rows, error_rows = counts
    if original_rows + error_rows != files_listed:
        raise RuntimeError(
            f"counts do not reconcile: {files_listed} files listed, {original_rows} feature rows, {error_rows} errors"
        )
    manifest = {
        "job": "extract_features",
        "inputs": list(args.input),
        "manifest": args.manifest,
        "config": to_dict(config),
        "feature_config": feature_config.to_dict(),
        "feature_config_version": feature_config.version(),
        "counts": {
            "files_listed": files_listed,
            "feature_rows": feature_rows,
            "clips": original_rows,
            "augmented_rows": feature_rows - original_rows,
            "errors": error_rows,
        },
        "timings_s": {"extract_and_write": round(extracted_s, 3), "total": round(time.time() - started, 3)},
        "spark": {"master": spark.sparkContext.master, "version": spark.version, "partitions": partitions},
        "read_mode": "spark" if with_content else "python",
        "writer": "python" if python_writes else "spark",
    }
    output.commit(manifest, cleanup=[staging])
    log.info(
        "%d files: %d clips (+%d augmented rows), %d errors -> %s in %.1f s",
        files_listed, original_rows, feature_rows - original_rows, error_rows, output.uri, time.time() - started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
