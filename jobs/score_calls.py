"""Score recorded calls with a trained model: emotion timelines per channel and per call.

Usage::

    spark-submit jobs/score_calls.py --input s3a://archive/2026/11/ --model /models/cnn-core6 \\
        --output /tables/call_emotions [--channels all|mix|customer|0|1] [--window-s 3.0 --hop-s 1.5] \\
        [--format parquet|csv] [--plot CALL_ID_OR_PATH_END] [--config conf/score.toml] [--set key=value ...]

Writes ``OUTPUT/segments`` (one row per stretch of a channel's timeline), ``OUTPUT/turns`` (one
row per speech turn of a channel: role, emotion, overlap, interruption), ``OUTPUT/channels`` (one row
per scored channel of a call: talk, emotion shares, negative figures), ``OUTPUT/calls`` (one row
per scored call: talk, overlap, interruptions, reply gaps, escalation score and reasons),
``OUTPUT/errors`` (files that could not be scored, with the reason; ``docs/CONTRACTS.md`` has
every column), ``OUTPUT/plots/<call_id>-<file name>.png`` with ``--plot``, then ``OUTPUT/_manifest.json`` (resolved config,
model, counts, timings) and ``OUTPUT/_SUCCESS``. Calls listed = calls scored + errors.

Emotion recognition of employees is restricted in some jurisdictions (the EU AI Act bans it in
the workplace): ``--channels customer`` scores only the channel named by ``channels.customer``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from jobs._cli import add_output_arguments, base_parser, print_config, run, setup_logging
from jobs._spark import build_spark, spark_facts
from ser_udfs.audio.vad import check_detector
from ser_udfs.calls.stream import WindowGeometry, check_predictor
from ser_udfs.errors import UserError
from ser_udfs.settings import resolve_config, to_dict
from ser_udfs.spark.incremental import LEDGER, RUNS_DIR, IncrementalOutput, committed_at, statuses_from
from ser_udfs.spark.io import OutputDir, audio_files, list_files, spark_reads_content
from ser_udfs.spark.path_checks import check_local_inputs_exist
from ser_udfs.spark.progress import JobProgress
from ser_udfs.calls.tables import TABLES, probability_columns, table_columns, table_ddls
from ser_udfs.spark.score import ReadSection, ScoreJobConfig, make_score_fn, output_ddl, table_specs
from training.bundle.load import Bundle
from training.inference import CallModel, ScoringModelFactory, load_scoring_model, model_id

log = logging.getLogger("ser_spark.score_calls")

#: The log-mel floor (dB under each clip's peak) of a model fit for calls: a line's noise floor sits
#: on it as the silence of clean training clips does.
CALL_MEL_TOP_DB = 40.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0], "score.toml")
    parser.add_argument("--input", action="append", required=True, help="directory, glob or URI of calls (repeatable)")
    parser.add_argument("--model", required=True, help="model bundle directory (from jobs/train.py)")
    add_output_arguments(parser)
    parser.add_argument("--channels", help="all | mix | customer | 0 | 1 | 0,1 (overrides channels.select)")
    parser.add_argument("--window-s", type=float, help="window length; must equal the model's clip length")
    parser.add_argument("--hop-s", type=float, help="seconds between window starts inside a turn longer than the window (overrides window.hop_s)")
    parser.add_argument("--format", choices=["parquet", "csv"], help="table format (overrides output.format)")
    parser.add_argument("--plot", help="call id or end of a path: write its timeline to plots/<call_id>-<name>.png")
    parser.add_argument(
        "--incremental", action="store_true",
        help="score only the calls no earlier run into --output covered (new or changed files), and add their rows",
    )
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "channels.select": None if args.channels is None else f'"{args.channels}"',
        "window.window_s": args.window_s,
        "window.hop_s": args.hop_s,
        "output.format": None if args.format is None else f'"{args.format}"',
        "output.plot_call": None if args.plot is None else f'"{args.plot}"',
    }
    return list(args.overrides) + [f"{key}={value}" for key, value in flags.items() if value is not None]


def _model_facts(bundle: Bundle, geometry: WindowGeometry, call_model: CallModel) -> dict[str, Any]:
    """The manifest's ``model`` entry."""
    return {
        "adapts_to_speaker": call_model.adapts_to_speaker,
        "path": str(bundle.path.resolve()),
        "model_id": model_id(bundle),
        "model_kind": bundle.model_kind,
        "labels": list(bundle.labels),
        "feature_config": bundle.feature_config.to_dict(),
        "feature_config_version": bundle.feature_config.version(),
        "window_s": geometry.window_samples / geometry.sample_rate,
        "hop_s": geometry.hop_samples / geometry.sample_rate,
    }


def _list_calls(
    spark: SparkSession, inputs: Sequence[str], read: ReadSection, *, with_stats: bool
) -> tuple[DataFrame, bool]:
    """The listed calls (cached; ``path, content, listing_error, size, modification_time_ms``)
    and whether Spark read their bytes."""
    with_content = spark_reads_content(read.mode, inputs)
    listed = audio_files(list_files(spark, inputs, with_content=with_content, with_stats=with_stats))
    return listed.cache(), with_content


def _score_into(
    staging: str, listed: DataFrame, partitions: int, bundle: Bundle, config: ScoreJobConfig, model_loads: Any,
    *, calls: int,
) -> None:
    """Score every listed call (``calls`` of them) in the workers, logging the progress; rows land in
    ``staging`` partitioned by ``table_kind``.

    The workers rebuild the bundle from a broadcast of the bytes the driver loaded it from.
    """
    spark = listed.sparkSession
    output_schema = StructType.fromDDL(output_ddl(bundle.labels))
    factory = ScoringModelFactory(
        files=spark.sparkContext.broadcast(bundle.files), source=str(bundle.path),
        torch_threads=config.worker.torch_threads,
        cnn_runtime=config.worker.cnn_runtime,
    )
    score = make_score_fn(
        model_id=model_id(bundle),
        cache_key=f"{model_id(bundle)} {factory.cnn_runtime} {factory.torch_threads} threads",
        make_predictor=factory,
        config=config,
        channels=config.channel_choice,
        read_mode=config.read.mode,
        output_schema=to_arrow_schema(output_schema),
        rows_per_batch=config.output.rows_per_batch,
        model_loads=model_loads,
        customer_channel=config.channels.customer,
    )
    rows = listed.select("path", "content", "listing_error").repartition(partitions).mapInArrow(score, output_schema)
    with JobProgress(spark.sparkContext, "scoring", files=calls, tasks=partitions):
        rows.write.mode("overwrite").partitionBy("table_kind").parquet(staging)


def _staged_tables(spark: SparkSession, staging: str, labels: Sequence[str]) -> dict[str, DataFrame]:
    """Each output table read back from the staging folder (empty when no row of it was written)."""
    staged = OutputDir(spark, staging)
    columns, ddls = table_columns(labels), table_ddls(labels)
    tables: dict[str, DataFrame] = {}
    for name in TABLES:
        if staged.exists(f"table_kind={name}"):
            tables[name] = spark.read.parquet(staged.child(f"table_kind={name}")).select(*columns[name])
        else:
            tables[name] = spark.createDataFrame([], ddls[name])
    return tables


def _counts(tables: dict[str, DataFrame], files_listed: int, skipped: int = 0) -> dict[str, Any]:
    """The manifest's counts; every listed call is skipped (an incremental run: covered by an
    earlier one), scored or an error, exactly once."""
    calls = tables["calls"]
    counts: dict[str, Any] = {
        "calls_listed": files_listed,
        "calls_skipped": skipped,
        "calls_scored": calls.count(),
        "calls_without_speech": calls.where(F.col("status") == "no_speech").count(),
        "errors": tables["errors"].count(),
        "segments": tables["segments"].count(),
        "turns": tables["turns"].count(),
        "channels": tables["channels"].count(),
    }
    if skipped + counts["calls_scored"] + counts["errors"] != files_listed:
        raise RuntimeError(
            f"counts do not reconcile: {files_listed} calls listed, {skipped} skipped, {counts['calls_scored']} scored, "
            f"{counts['errors']} errors"
        )
    totals = calls.agg(F.sum("duration_s").alias("audio_s"), F.sum("windows_scored").alias("windows")).first()
    counts["audio_s"] = round(float(totals["audio_s"] or 0.0), 3)
    counts["windows_scored"] = int(totals["windows"] or 0)
    return counts


def _stage_tables(spark: SparkSession, staging: str, tables: dict[str, DataFrame], file_format: str) -> None:
    """Write each table into ``staging`` beside the scored rows (small tables in one file)."""
    staged = OutputDir(spark, staging)
    for name in TABLES:
        table = tables[name] if name in ("segments", "turns") else tables[name].coalesce(1)
        _write_table(table, staged.child(name), file_format)


def _write_table(frame: DataFrame, uri: str, file_format: str) -> None:
    if file_format == "csv":
        complex_columns = [f.name for f in frame.schema.fields if f.dataType.typeName() in ("array", "map", "struct")]
        frame = frame.select(*[F.to_json(c).alias(c) if c in complex_columns else F.col(c) for c in frame.columns])
        frame.write.mode("overwrite").option("header", "true").option("escape", '"').csv(uri)  # RFC 4180 quoting
    else:
        frame.write.mode("overwrite").parquet(uri)


def _stage_plot(staging: str, segments: DataFrame, calls: DataFrame, wanted: str, labels: Sequence[str]) -> str:
    """Draw the timeline of the one scored call that ``wanted`` names into ``staging/plots/``
    (:func:`~ser_udfs.calls.plot.timeline_file_name`: call id and file name).

    Returns the plot's name inside the output.
    """
    from ser_udfs.calls.plot import plot_call_timeline, timeline_file_name

    match = calls.where((F.col("call_id") == wanted) | F.col("path").endswith(wanted)).select("call_id", "path").limit(2).collect()
    if len(match) != 1:
        raise UserError(
            f"--plot {wanted!r} matches {'no' if not match else 'more than one'} scored call; "
            "give a call id from the calls table or a longer end of its path"
        )
    call_id, path = match[0]
    rows = segments.where(F.col("call_id") == call_id).toPandas()
    png = plot_call_timeline(rows, labels, title=f"call {call_id}: {path}", probability_columns=probability_columns(labels))
    name = f"plots/{timeline_file_name(call_id, path)}"
    OutputDir(segments.sparkSession, staging).write_bytes(name, png)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    config = resolve_config(ScoreJobConfig, args.config, _overrides(args))
    if args.print_config:
        return print_config(config)
    channels = config.channel_choice
    check_local_inputs_exist("--input", args.input)
    bundle = load_scoring_model(args.model)  # loaded and verified once, here
    call_model = CallModel(bundle)
    model = _model_facts(bundle, check_predictor(call_model, config.window), call_model)
    check_detector(config.vad, bundle.feature_config.audio.target_sample_rate_hz)
    log.info(
        "model %s (%s, labels %s); turns scored whole up to %.2f s, longer ones in windows every %.2f s, at %d Hz; "
        "channels %s; %s", model["model_id"], bundle.model_kind, ", ".join(bundle.labels), model["window_s"],
        model["hop_s"], bundle.feature_config.audio.target_sample_rate_hz, channels,
        f"adapts to each channel with at least {config.adaptation.min_windows} windows"
        if call_model.adapts_to_speaker and config.adaptation.mode == "speaker" else "no speaker adaptation",
    )
    if bundle.feature_config.mel.top_db > CALL_MEL_TOP_DB:
        log.warning(
            "the model's log-mel floor is %.0f dB under each clip's peak: trained on clean clips, it sees a phone "
            "line's noise floor as something new and loses about 0.06 UA in calls (docs/RESULTS.md); for calls, "
            "train it on features extracted with --set mel.top_db=%.0f", bundle.feature_config.mel.top_db,
            CALL_MEL_TOP_DB,
        )
    started = time.time()
    spark = build_spark("ser-score-calls")
    output = OutputDir(spark, args.output)
    # Everything that can refuse the run before scoring is checked before the output is touched.
    listed, with_content = _list_calls(spark, args.input, config.read, with_stats=args.incremental)
    files_listed = listed.count()
    if files_listed == 0:
        raise UserError(f"no audio files found in {', '.join(args.input)}")
    with output.writing("score_calls", stale_after_s=args.lock_stale_h * 3600) as staging:
        incremental = IncrementalOutput(output, table_specs(config.output.format), identity=model["model_id"],
                                        identity_name="model") if args.incremental else None
        plan = incremental.plan(listed) if incremental else None
        to_score = plan.todo if plan else listed
        skipped = plan.skipped if plan else 0
        partitions = max(spark.sparkContext.defaultParallelism,
                         -(-(files_listed - skipped) // config.read.files_per_partition))
        log.info("%d calls listed, %d to score; %d partitions", files_listed, files_listed - skipped, partitions)
        model_loads = spark.sparkContext.accumulator(0)
        _score_into(staging, to_score, partitions, bundle, config, model_loads, calls=files_listed - skipped)
        scored_s = time.time() - started

        tables = _staged_tables(spark, staging, bundle.labels)
        counts = _counts(tables, files_listed, skipped)
        _stage_tables(spark, staging, tables, config.output.format)
        plot = None
        if config.output.plot_call:
            plot = _stage_plot(staging, tables["segments"], tables["calls"], config.output.plot_call, bundle.labels)
        plot_uri = output.child(plot) if plot else None
        manifest = {
            "job": "score_calls",
            "inputs": list(args.input),
            "config": to_dict(config),
            "channels": channels if isinstance(channels, str) else list(channels),
            "model": model,
            "counts": counts,
            "model_loads": model_loads.value,
            "timings_s": {"score_and_stage": round(scored_s, 3), "total": round(time.time() - started, 3)},
            "spark": spark_facts(spark, partitions=partitions),
            "read_mode": "spark" if with_content else config.read.mode,
            "plot": plot_uri,
            "run_id": output.run_id,
            "finished_at": committed_at(),
        }
        if incremental and plan:
            manifest["incremental"] = plan.facts()
            rewrites = incremental.stage_rewrites(staging, plan)
            ledger = incremental.ledger_rows(plan, statuses_from(tables, "calls", "scored"), output.run_id,
                                             manifest["finished_at"])
            if plot:
                output.move_into_place(OutputDir(spark, staging).child(plot), plot)
            incremental.commit(staging, output.run_id, rewrites, ledger, manifest, staged_tables=TABLES)
        else:
            output.publish(staging, [*TABLES, LEDGER, RUNS_DIR, *([plot] if plot else [])], manifest)
    _log_done(output, counts, model_loads.value, plot_uri)
    return 0


def _log_done(output: OutputDir, counts: dict[str, Any], model_loads: int, plot_uri: str | None) -> None:
    log.info(
        "%d calls: %d scored (%d without speech), %d errors; %d segments, %d turns, %d channels; model loaded %d "
        "time(s)", counts["calls_listed"], counts["calls_scored"], counts["calls_without_speech"], counts["errors"],
        counts["segments"], counts["turns"], counts["channels"], model_loads,
    )
    for name in TABLES:
        log.info("%s: %s", name, output.child(name))
    if plot_uri:
        log.info("timeline plot: %s", plot_uri)


def cli() -> None:
    """The console entry point of an installed copy (``pyproject.toml``'s ``[project.scripts]``)."""
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
