"""Is the features UDF as fast as the extraction job's ``mapInArrow`` path? Side by side, alternating.

Usage::

    python bench/udf_throughput.py [--source ../shared/data/ravdess-speech-16k] [--clips 2000] [--pairs 2] \\
        [--cores 2] [--work-dir /tmp/ser-udf-bench]

The clips of ``bench/extract_throughput.py`` (RAVDESS up-sampled to 48 kHz WAV, replicated to
``--clips`` files) go, in ``local[cores]``, through (a) ``jobs/extract_features.py`` (its
``mapInArrow`` workers, Parquet written by them) and (b) ``spark.read.format("binaryFile")``,
``ser_udfs.spark.udfs.features_udf`` and Spark's Parquet writer, in alternating pairs (a, b, a,
b, ...) so that the machine's noise falls on both. Printed: clips/s of each run, the medians, and
their ratio. Both paths call the same per-clip function
(:func:`ser_udfs.features.extract_file.extract_file`; ``tests/test_udfs.py`` checks their values
are equal), so the ratio is the cost of the Spark plumbing alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._corpus import DEFAULT_SOURCE, prepare_masters, replicate  # noqa: E402

log = logging.getLogger("bench.udf_throughput")


def run_job(corpus: Path, output: Path) -> float:
    """Seconds of the extraction job on ``corpus``."""
    from jobs._cli import run
    from jobs.extract_features import main

    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    if run(main, ["--input", str(corpus), "--output", str(output), "--log-level", "WARNING"]) != 0:
        raise SystemExit("the extraction job failed")
    return time.perf_counter() - started


def run_udf(spark, corpus: Path, output: Path) -> float:
    """Seconds of reading ``corpus``'s bytes, the features UDF and writing Parquet."""
    from ser_udfs.features.config import FeatureConfig
    from ser_udfs.spark.udfs import features_udf

    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    clips = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(corpus))
    partitions = spark.sparkContext.defaultParallelism * 4
    clips.repartition(partitions).select("path", features_udf(FeatureConfig())("content").alias("f")) \
        .select("path", "f.*").write.mode("overwrite").parquet(str(output))
    return time.perf_counter() - started


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work-dir", default="/tmp/ser-udf-bench")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["SER_SPARK_MASTER"] = f"local[{args.cores}]"
    from jobs._spark import build_spark

    work = Path(args.work_dir)
    corpus = replicate(prepare_masters(Path(args.source), work / "masters"), work / "clips", args.clips)
    spark = build_spark("ser-udf-bench")
    run_udf(spark, corpus.root, work / "warm-udf")  # numba and worker start-up once, before timing
    timings: dict[str, list[float]] = {"job (mapInArrow)": [], "features_udf": []}
    for _ in range(args.pairs):
        timings["job (mapInArrow)"].append(run_job(corpus.root, work / "job-out"))
        timings["features_udf"].append(run_udf(spark, corpus.root, work / "udf-out"))
    print(f"\n## Features UDF against the extraction job, local[{args.cores}], {args.clips} clips "
          f"({corpus.audio_seconds / 60:.1f} min of audio), {args.pairs} alternating pairs\n")
    print("| path | clips/s per run | median clips/s |")
    print("|---|---|---|")
    medians = {}
    for name, seconds in timings.items():
        rates = [args.clips / value for value in seconds]
        medians[name] = statistics.median(rates)
        print(f"| {name} | {', '.join(f'{rate:.1f}' for rate in rates)} | {medians[name]:.1f} |")
    print(f"\nfeatures_udf / job: {medians['features_udf'] / medians['job (mapInArrow)']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
