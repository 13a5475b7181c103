"""Compute frozen-encoder embeddings (pooled hidden states) of every clip of a features table.

Usage::

    spark-submit jobs/extract_embeddings.py --input /tables/ser_features \\
        --pretrained /models/wavlm-base-plus --output /tables/ser_embeddings \\
        [--config conf/embeddings.toml] [--set embedding.layers=[6,12]] [--set embedding.device=cuda]

The input is an extraction output written with ``--set output.keep_waveform=true``. Each Python
worker loads the encoder once; ``--pretrained`` must be readable at the same path on every worker.
Writes ``OUTPUT/embeddings`` (Parquet, partitioned by corpus: the features table's row columns
plus ``embedding``, ``embedding_shape``, ``embedding_layers``, ``embedding_layer_weights``,
``embedding_version``), then ``OUTPUT/_manifest.json`` (resolved config, encoder, the input's
feature config, counts, timings) and ``OUTPUT/_SUCCESS``. Train a head on it with
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

from pyspark.sql import functions as F

from jobs._cli import base_parser, run, setup_logging
from jobs._spark import build_spark
from ser_udfs.embeddings import EmbeddingConfig, check_sample_rate, embedding_version, encoder_fingerprint, resolve_layers
from ser_udfs.errors import UserError
from ser_udfs.feature_config import FeatureConfig
from ser_udfs.settings import apply_overrides, from_dict, load_toml, to_dict
from ser_udfs.spark_embeddings import EMBEDDINGS_TABLE, ROW_COLUMNS, make_embedding_udf
from ser_udfs.spark_io import OutputDir, read_manifest_json

log = logging.getLogger("ser_spark.extract_embeddings")


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(__doc__.split("\n\n")[0], "embeddings.toml")
    parser.add_argument("--input", required=True, help="a features table with waveforms (the extraction job's --output)")
    parser.add_argument("--pretrained", help="Hugging Face model folder (or hub id); overrides embedding.pretrained")
    parser.add_argument("--output", required=True, help="output folder (local path or URI)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    settings = apply_overrides(load_toml(args.config), args.overrides)
    config = from_dict(EmbeddingConfig, settings.get("embedding", {}), where="embedding")
    if args.pretrained:
        config = replace(config, pretrained=args.pretrained)
    started = time.time()
    spark = build_spark("ser-extract-embeddings")
    input_manifest = read_manifest_json(spark, args.input)
    feature_config = FeatureConfig.from_dict(input_manifest["feature_config"])
    sample_rate_hz = feature_config.audio.target_sample_rate_hz
    source = OutputDir(spark, args.input)
    if not source.exists("features"):
        raise UserError(f"{args.input} holds no features table; run jobs/extract_features.py first")
    table = spark.read.parquet(source.child("features"))
    if "waveform" not in table.columns or table.where(F.col("waveform").isNull()).limit(1).count():
        raise UserError(
            f"the features table {args.input} has no waveforms (or not for every row); "
            "re-run the extraction with --set output.keep_waveform=true"
        )

    from training.hf_audio import load_encoder  # torch and transformers only once the input is known to be usable

    encoder = load_encoder(config.pretrained, device="cpu")
    check_sample_rate(encoder.extractor, sample_rate_hz)
    model_config = encoder.model.config
    layers = resolve_layers(config.layers, model_config.num_hidden_layers + 1)
    config = replace(config, layers=layers)
    fingerprint = encoder_fingerprint(encoder.model)
    version = embedding_version(fingerprint, layers=layers, layer_weights=config.layer_weights,
                                trim_padding=config.trim_padding, sample_rate_hz=sample_rate_hz)
    shape = [1 if config.layer_weights else len(layers), int(model_config.hidden_size)]
    encoder_facts = {
        "pretrained": config.pretrained,
        "model_type": model_config.model_type,
        "num_hidden_layers": int(model_config.num_hidden_layers),
        "hidden_size": int(model_config.hidden_size),
        "fingerprint": fingerprint,
        "feature_extractor": encoder.extractor.to_dict(),
    }
    del encoder

    clips = table.count()
    partitions = max(spark.sparkContext.defaultParallelism, math.ceil(clips / config.rows_per_partition))
    log.info("%d clips, %d partitions; %s layers %s -> [%d, %d] per clip (version %s)", clips, partitions,
             model_config.model_type, list(layers), *shape, version)
    embed = make_embedding_udf(config, sample_rate_hz=sample_rate_hz)
    rows = table.repartition(partitions).select(
        *ROW_COLUMNS,
        embed(F.col("waveform")).alias("embedding"),
        F.array(*[F.lit(size) for size in shape]).cast("array<int>").alias("embedding_shape"),
        F.array(*[F.lit(layer) for layer in layers]).cast("array<int>").alias("embedding_layers"),
        F.array(*[F.lit(float(w)) for w in config.layer_weights]).cast("array<float>").alias("embedding_layer_weights"),
        F.lit(version).alias("embedding_version"),
    )
    output = OutputDir(spark, args.output)
    staging = output.begin()
    rows.write.mode("overwrite").partitionBy("corpus").parquet(staging)
    output.move_into_place(staging, EMBEDDINGS_TABLE)
    written = spark.read.parquet(output.child(EMBEDDINGS_TABLE)).count()
    seconds = time.time() - started
    manifest = {
        "job": "extract_embeddings",
        "input": args.input,
        "config": {"embedding": to_dict(config)},
        "encoder": encoder_facts,
        "embedding_version": version,
        "embedding_shape": shape,
        "feature_config": feature_config.to_dict(),
        "feature_config_version": feature_config.version(),
        "counts": {"clips": clips, "rows_written": written},
        "timings_s": {"total": round(seconds, 3), "clips_per_s": round(clips / max(seconds, 1e-9), 3)},
        "spark": {"master": spark.sparkContext.master, "version": spark.version, "partitions": partitions},
    }
    output.commit(manifest, cleanup=[staging])
    log.info("%d clips embedded -> %s in %.1f s", written, output.uri, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
