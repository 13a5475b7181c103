"""The one way the jobs build a Spark session.

The master comes from ``spark-submit --master`` (or ``spark.master`` in the Spark config).
Only when a job is started as a plain Python program, with no master configured anywhere, does
it fall back to ``local[*]`` so that ``python -m jobs.extract_features ...`` works on a laptop.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

#: Settings every job wants unless the user's Spark config says otherwise.
JOB_DEFAULTS: Mapping[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
    "spark.python.worker.reuse": "true",
    "spark.sql.sources.partitionOverwriteMode": "static",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "true",
    "spark.executorEnv.OMP_NUM_THREADS": "1",
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.executorEnv.MKL_NUM_THREADS": "1",
    # The driver JVM of these jobs only plans and schedules (Python does the work): the quick
    # C1 compiler alone halves the JVM's CPU time in a job and its start-up (docs/PERFORMANCE.md).
    # Applies when the session starts the JVM (python -m jobs...), not under spark-submit.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}


def build_spark(app_name: str, conf: Mapping[str, str] | None = None) -> SparkSession:
    """Get or create the session for ``app_name``; ``conf`` entries override the defaults.

    Settings already given by the user (``spark-submit --conf``, ``spark-defaults.conf``)
    win over :data:`JOB_DEFAULTS` but not over ``conf``.
    """
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Started by spark-submit: attach to its JVM, or SparkConf() misses --master and --conf.
        SparkContext._ensure_initialized()
    user_conf = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    if not user_conf.contains("spark.master"):
        builder = builder.master(os.environ.get("SER_SPARK_MASTER", "local[*]"))
    if not user_conf.contains("spark.pyspark.python") and "PYSPARK_PYTHON" not in os.environ:
        # Python workers run the driver's interpreter (the project's environment) by default.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    for key, value in JOB_DEFAULTS.items():
        if not user_conf.contains(key):
            builder = builder.config(key, value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in (conf or {}).items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    return spark


def spark_facts(spark: SparkSession, *, partitions: int) -> dict[str, Any]:
    """What a job's ``_manifest.json`` records of the run: master, Spark version, partitions."""
    return {"master": spark.sparkContext.master, "version": spark.version, "partitions": partitions}
