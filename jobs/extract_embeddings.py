"""Compute frozen-encoder embeddings (pooled hidden states) of every clip of a features table.

Usage::

    spark-submit jobs/extract_embeddings.py --input /tables/ser_features \\
        --pretrained /models/wavlm-base-plus --output /tables/ser_embeddings \\
        [--config conf/embeddings.toml] [--set embedding.layers=[6,12]] [--set embedding.device=cuda]

The input is an extraction output written with ``--set output.keep_waveform=true``. Each Python
worker loads the encoder once; ``--pretrained`` must be readable at the same path on every worker.
Writes ``OUTPUT/embeddings`` (Parquet, partitioned by corpus: the features table's row columns
plus ``embedding``, ``embedding_shape``, ``embedding_layers``, ``embedding_layer_weights``,
``embedding_version``), then ``OUTPUT/_manifest.json`` (the whole resolved config, encoder, the
input's feature config, counts, timings) and ``OUTPUT/_SUCCESS``. The config file is the one
``jobs/train.py --model embed-*`` reads: this job uses its ``[embedding]`` section and checks and
records all of it. Train a head on the output with
``jobs/train.py --features OUTPUT --model embed-logreg --pretrained SAME_PATH``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import add_output_arguments, base_parser, print_config, run, setup_logging
from jobs._spark import build_spark, spark_facts
from ser_udfs.encoders.pooling import plan_embeddings
from ser_udfs.features.config import FeatureConfig
from ser_udfs.settings import resolve_config, to_dict
from ser_udfs.spark.embeddings import EMBEDDINGS_TABLE, embedding_rows, open_waveform_table
from ser_udfs.spark.io import OutputDir
from training.models.embedding_head import EmbeddingHeadTrainConfig

log = logging.getLogger("ser_spark.extract_embeddings")


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(__doc__.split("\n\n")[0], "embeddings.toml")
    parser.add_argument("--input", required=True, help="a features table with waveforms (the extraction job's --output)")
    parser.add_argument("--pretrained", help="Hugging Face model folder (or hub id); overrides embedding.pretrained")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    config = resolve_config(EmbeddingHeadTrainConfig, args.config, args.overrides)
    if args.print_config:
        return print_config(config)
    if args.pretrained:
        config = replace(config, embedding=replace(config.embedding, pretrained=args.pretrained))
    started = time.time()
    spark = build_spark("ser-extract-embeddings")
    table, input_manifest = open_waveform_table(spark, args.input)
    feature_config = FeatureConfig.from_dict(input_manifest["feature_config"])
    plan = plan_embeddings(config.embedding, sample_rate_hz=feature_config.audio.target_sample_rate_hz)
    config = replace(config, embedding=plan.config)

    clips = table.count()
    partitions = max(spark.sparkContext.defaultParallelism, math.ceil(clips / config.embedding.rows_per_partition))
    log.info("%d clips, %d partitions; %s layers %s -> %s per clip (version %s)", clips, partitions,
             plan.encoder["model_type"], list(plan.config.layers), list(plan.shape), plan.version)
    output = OutputDir(spark, args.output)
    with output.writing("extract_embeddings", stale_after_s=args.lock_stale_h * 3600) as staging:
        staged = OutputDir(spark, staging)
        embedding_rows(table, plan, partitions=partitions).write.mode("overwrite").partitionBy("corpus").parquet(
            staged.child(EMBEDDINGS_TABLE)
        )
        written = spark.read.parquet(staged.child(EMBEDDINGS_TABLE)).count()
        seconds = time.time() - started
        manifest = {
            "job": "extract_embeddings",
            "input": args.input,
            "config": to_dict(config),
            "encoder": plan.encoder,
            "embedding_version": plan.version,
            "embedding_shape": list(plan.shape),
            "feature_config": feature_config.to_dict(),
            "feature_config_version": feature_config.version(),
            "counts": {"clips": clips, "rows_written": written},
            "timings_s": {"total": round(seconds, 3), "clips_per_s": round(clips / max(seconds, 1e-9), 3)},
            "spark": spark_facts(spark, partitions=partitions),
        }
        output.publish(staging, [EMBEDDINGS_TABLE], manifest)
    log.info("%d clips embedded -> %s in %.1f s", written, output.uri, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
