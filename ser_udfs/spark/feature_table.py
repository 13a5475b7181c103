"""Reading a finished features table (written by ``jobs/extract_features.py``), as Spark or pandas rows."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ser_udfs.errors import UserError
from ser_udfs.folders import what_folder_holds
from ser_udfs.spark.io import OutputDir, read_manifest_json

#: Columns every training and evaluation step needs besides the features themselves.
ROW_COLUMNS = ("clip_id", "path", "corpus", "speaker", "gender", "label", "raw_label", "augmentation",
               "feature_config_version")


def columns_for(inputs: Sequence[str]) -> list[str]:
    """Table columns holding the model inputs ``inputs``: each map with its ``*_shape`` column."""
    return [column for name in inputs for column in (name, f"{name}_shape") if column not in ("stats_shape", "egemaps_shape")
            and not (name == "waveform" and column == "waveform_shape")]


def open_feature_table(
    spark: SparkSession, table_uri: str, *, columns: Sequence[str] = ()
) -> tuple[DataFrame, dict[str, Any]]:
    """The features table at ``table_uri`` (an extraction ``--output``) and its ``_manifest.json``.

    Refuses an unfinished output, one without features and one without every name in ``columns``.
    """
    check_holds(table_uri, "features table", "jobs/extract_features.py")
    manifest = read_manifest_json(spark, table_uri)
    output = OutputDir(spark, table_uri)
    if not output.exists("features"):
        raise UserError(f"{table_uri} holds no features (every file was an error?); see {output.child('errors')}")
    table = spark.read.parquet(output.child("features"))
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise UserError(
            f"the features table {table_uri} has no column(s) {missing}"
            + ("; extract with --set output.keep_waveform=true" if "waveform" in missing else "")
        )
    return table, manifest


def check_holds(uri: str, what: str, job: str) -> None:
    """Refuse a folder this project wrote that is not a ``what``, saying what it is."""
    holds = what_folder_holds(uri)
    if holds and what not in holds:
        raise UserError(f"{uri} is {holds}, not a {what}; give the --output folder of {job}")


def read_feature_table(
    spark: SparkSession, table_uri: str, *, feature_columns: Sequence[str], labelled_only: bool = True
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows of the features table at ``table_uri`` (an extraction ``--output``) and its manifest.

    Parameters
    ----------
    feature_columns
        Feature columns to load (e.g. ``["stats"]`` or ``["log_mel", "log_mel_shape"]``); only
        these and :data:`ROW_COLUMNS` travel to the driver.
    labelled_only
        Drop rows without a label.

    Returns
    -------
    frame
        One row per clip (and per augmented copy).
    manifest
        The table's ``_manifest.json`` (``"feature_config"`` holds the feature config dict).
    """
    table, manifest = open_feature_table(spark, table_uri, columns=feature_columns)
    if labelled_only:
        table = table.where(F.col("label").isNotNull())
    frame = table.select(*ROW_COLUMNS, *feature_columns).toPandas()
    return frame, manifest
