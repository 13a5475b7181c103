"""Apply a model bundle to a labelled features table and report its metrics.

Usage::

    spark-submit jobs/evaluate.py --features /tables/other_corpus --model /models/cnn-core6 \\
        --output /reports/x

This is how cross-corpus generalisation is measured: labels outside the bundle's taxonomy are
mapped or dropped (and counted), and a table whose feature config differs from the bundle's is
refused. Writes ``evaluation.json``, ``confusion_matrix.png`` and ``predictions.parquet``. It takes
no ``--config`` or ``--set``: the bundle decides the features, the taxonomy and the model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import run, setup_logging
from jobs._spark import build_spark
from ser_udfs.errors import UserError
from ser_udfs.spark.feature_table import columns_for, read_feature_table
from training.bundle.load import load_bundle
from training.evaluate import evaluate_frame
from training.metrics import format_headline

log = logging.getLogger("ser_spark.evaluate")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--features", required=True, help="a labelled features table (extraction --output)")
    parser.add_argument("--model", required=True, help="a model bundle folder (jobs/train.py --output)")
    parser.add_argument("--output", required=True, help="report folder to write (local path)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UserError(
            f"jobs/evaluate.py does not take {' '.join(unknown)}: the model bundle decides the features, "
            "taxonomy and model, so pass only --features, --model, --output and --log-level"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    bundle = load_bundle(args.model)
    spark = build_spark("ser-evaluate")
    frame, manifest = read_feature_table(spark, args.features, feature_columns=columns_for(bundle.inputs))
    evaluation = evaluate_frame(frame, bundle, args.output, feature_config=manifest["feature_config"])
    print(f"{evaluation['model']} on {evaluation['rows']} rows: {format_headline(evaluation['metrics'])}")
    print(f"report: {args.output}")
    return 0


def cli() -> None:
    """The console entry point of an installed copy (``pyproject.toml``'s ``[project.scripts]``)."""
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
