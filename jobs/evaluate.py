"""Apply a model bundle to a labelled features table and report its metrics.

Usage::

    spark-submit jobs/evaluate.py --features /tables/other_corpus --model /models/cnn-core6 \\
        --output /reports/x

This is how cross-corpus generalisation is measured: labels outside the bundle's taxonomy are
mapped or dropped (and counted), and a table whose feature config differs from the bundle's is
refused. Writes ``evaluation.json``, ``confusion_matrix.png`` and ``predictions.parquet``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import base_parser, run, setup_logging
from jobs._spark import build_spark
from ser_udfs.feature_table import columns_for, read_feature_table
from training.bundle import load_bundle
from training.evaluate import evaluate_frame
from training.metrics import format_headline

log = logging.getLogger("ser_spark.evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0], "features.toml")
    parser.add_argument("--features", required=True, help="a labelled features table (extraction --output)")
    parser.add_argument("--model", required=True, help="a model bundle folder (jobs/train.py --output)")
    parser.add_argument("--output", required=True, help="report folder to write (local path)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    bundle = load_bundle(args.model)
    spark = build_spark("ser-evaluate")
    frame, manifest = read_feature_table(spark, args.features, feature_columns=columns_for(bundle.inputs))
    evaluation = evaluate_frame(frame, args.model, args.output, feature_config=manifest["feature_config"])
    print(f"{evaluation['model']} on {evaluation['rows']} rows: {format_headline(evaluation['metrics'])}")
    print(f"report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
