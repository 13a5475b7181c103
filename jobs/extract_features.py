"""Extract features from audio collections into a Parquet feature table.

Usage::

    spark-submit jobs/extract_features.py --input /data/RAVDESS --input /data/CREMA-D \\
        --output /tables/ser_features [--manifest labels.csv] [--config conf/features.toml] \\
        [--set mel.n_mels=64 ...] [--augment N]

Writes ``OUTPUT/features`` (partitioned by corpus), ``OUTPUT/errors`` and
``OUTPUT/_manifest.json`` (resolved config, inputs, counts, timings), then ``OUTPUT/_SUCCESS``.
With ``--incremental`` only the files no earlier run covered are extracted, and their rows are
added as a run partition (``features/run_id=<id>/corpus=<c>``; :mod:`ser_udfs.spark.incremental`).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import add_output_arguments, base_parser, print_config, run, setup_logging
from jobs._spark import build_spark, spark_facts
from ser_udfs.errors import UserError
from ser_udfs.settings import resolve_config, to_dict
from ser_udfs.spark.extract_driver import (
    TABLE_SPECS, TABLES, ExtractJobConfig, choose_writer, extract_tables, extraction_inputs, output_identity,
    partitions_for, staged_tables,
)
from ser_udfs.spark.incremental import LEDGER, RUNS_DIR, IncrementalOutput, committed_at, statuses_from
from ser_udfs.spark.io import OutputDir
from ser_udfs.spark.path_checks import check_local_inputs_exist, check_output_apart

log = logging.getLogger("ser_spark.extract_features")


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(__doc__.split("\n\n")[0], "features.toml")
    parser.add_argument("--input", action="append", default=[], help="directory, glob or URI (repeatable)")
    parser.add_argument("--manifest", help="CSV with columns path,label[,speaker,gender,corpus]")
    add_output_arguments(parser)
    parser.add_argument("--augment", type=int, help="augmented copies per clip (overrides augment.variants)")
    parser.add_argument(
        "--incremental", action="store_true",
        help="extract only the files no earlier run into --output covered (new or changed files), and add their rows",
    )
    args = parser.parse_args(argv)
    if not args.input and not args.manifest:
        parser.error("give at least one --input or a --manifest")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    overrides = list(args.overrides) + ([f"augment.variants={args.augment}"] if args.augment is not None else [])
    config = resolve_config(ExtractJobConfig, args.config, overrides)
    if args.print_config:
        return print_config(config)
    check_output_apart(args.output, [*args.input, *([args.manifest] if args.manifest else [])])
    check_local_inputs_exist("--input", args.input)
    check_local_inputs_exist("--manifest", [args.manifest] if args.manifest else [])
    started = time.time()
    spark = build_spark("ser-extract-features")
    output = OutputDir(spark, args.output)
    # Everything that can refuse the run is checked before the output is touched.
    inputs = extraction_inputs(spark, args.input, args.manifest, config.read, with_stats=args.incremental)
    files_listed = inputs.rows.count()
    if files_listed == 0:
        raise UserError(f"no audio files found in {', '.join(args.input or [args.manifest])}")
    writer = choose_writer(spark, output.uri, config.output.writer)
    with output.writing("extract_features", stale_after_s=args.lock_stale_h * 3600) as staging:
        incremental = IncrementalOutput(output, TABLE_SPECS, identity=output_identity(config),
                                        identity_name="feature config") if args.incremental else None
        plan = incremental.plan(inputs.rows) if incremental else None
        to_extract = replace(inputs, rows=plan.todo) if plan else inputs
        skipped = plan.skipped if plan else 0
        partitions = partitions_for(
            files_listed - skipped, cores=spark.sparkContext.defaultParallelism,
            files_per_partition=config.read.files_per_partition,
        )
        log.info("%d audio files listed, %d to extract; %d partitions", files_listed, files_listed - skipped, partitions)
        counts = extract_tables(to_extract, config, staging=staging, writer=writer, partitions=partitions,
                                files=files_listed - skipped)
        extracted_s = time.time() - started
        manifest = {
            "job": "extract_features",
            "inputs": list(args.input),
            "manifest": args.manifest,
            "config": to_dict(config),
            "feature_config": config.features.to_dict(),
            "feature_config_version": config.features.version(),
            "counts": counts.reconcile(files_listed, skipped),
            "timings_s": {"extract_and_write": round(extracted_s, 3), "total": round(time.time() - started, 3)},
            "spark": spark_facts(spark, partitions=partitions),
            "read_mode": "spark" if inputs.with_content else "python",
            "writer": writer,
            "run_id": output.run_id,
            "finished_at": committed_at(),
        }
        if incremental and plan:
            manifest["incremental"] = plan.facts()
            rewrites = incremental.stage_rewrites(staging, plan)
            staged = staged_tables(spark, staging)
            ledger = incremental.ledger_rows(plan, statuses_from(staged, "features", "extracted"), output.run_id,
                                             manifest["finished_at"])
            incremental.commit(staging, output.run_id, rewrites, ledger, manifest, staged_tables=TABLES)
        else:
            output.publish(staging, [*TABLES, LEDGER, RUNS_DIR], manifest)
    log.info(
        "%d files: %d clips (+%d augmented rows), %d errors -> %s in %.1f s", files_listed, counts.clips,
        counts.feature_rows - counts.clips, counts.errors, output.uri, time.time() - started,
    )
    return 0


def cli() -> None:
    """The console entry point of an installed copy (``pyproject.toml``'s ``[project.scripts]``)."""
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
