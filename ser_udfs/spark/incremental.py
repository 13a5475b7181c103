"""Incremental runs into one output: each run processes only the input files no committed run covered.

An incremental output (``--incremental`` of the scoring and extraction jobs) keeps every table
as a folder of run partitions, ``TABLE/run_id=<id>/...``, and a **ledger**,
``ledger/run_id=<id>/*.parquet`` (:data:`LEDGER_DDL`), with one row per input file a committed
run covered: its path, size, modification time, the output's identity (the model id of scoring,
the feature config version of extraction), the run id, the status (``scored`` / ``extracted`` /
``error``) and when the run committed. A file's entry is its latest run's row.

A run (:class:`IncrementalOutput`, inside :meth:`~ser_udfs.spark.io.OutputDir.writing`, so under
the output's lock) first **recovers** from a run that died: a partition a swap had set aside is
put back when its replacement is missing (or removed when the replacement is in place), and a
partition whose run is not in the ledger is removed. Then it **plans** (:meth:`IncrementalOutput.plan`):
a listed file whose path, size and modification time match its ledger entry is skipped; a new
file is processed; a file that changed is processed again and its earlier rows are dropped from
their run's partitions; a file in the ledger but no longer listed keeps its rows and is reported.
The job writes the tables of the files to process into its staging folder as a full run does, and
:meth:`IncrementalOutput.commit` moves them into place:

1. each earlier partition holding rows of a changed file is replaced by a staged copy without
   them (the old one is renamed aside first, then the copy renamed in, then the old one deleted);
2. the run's partition of each table is renamed into place;
3. the run's ledger partition is renamed into place: **the commit point**; a run that dies
   before it leaves partitions that the next run removes (and its files are processed again), one
   that dies after it is committed;
4. ``_runs/<run_id>.json`` (the run's manifest), ``_manifest.json`` and ``_SUCCESS``.

Each step is a rename within one file system: atomic on a local disk and on HDFS, so a reader
sees a run's partition of a table whole or not at all. A reader that must see runs whole across
tables reads the runs the ledger lists (``run_id IN (SELECT run_id FROM ledger)``): a run's data
is in place before its ledger partition. On object stores (``s3a://``) a rename is a copy and a
delete, and none of this is atomic; there, run one job at a time and read through the ledger.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ser_udfs.errors import UserError
from ser_udfs.spark.io import MANIFEST_NAME, SUCCESS_NAME, OutputDir

log = logging.getLogger(__name__)

LEDGER = "ledger"
#: Each run's manifest, ``_runs/<run_id>.json``.
RUNS_DIR = "_runs"
RUN_COLUMN = "run_id"
#: Where a swap sets an earlier partition aside: ``TABLE/_replaced-run_id=<id>`` (hidden from readers).
ASIDE_PREFIX = "_replaced-"
#: The ledger's columns (``run_id`` from the partition folder's name).
LEDGER_DDL = (
    "path string, size bigint, modification_time_ms bigint, identity string, status string, committed_at string, "
    "run_id string"
)
#: How many paths a manifest lists by name (changed, missing); the counts are always whole.
LISTED_PATHS = 20


@dataclass(frozen=True)
class TableSpec:
    """How a job writes one of its tables: file format (``parquet`` / ``csv``) and the columns it
    is partitioned by inside each run's partition (``("corpus",)`` for extraction's features)."""

    name: str
    file_format: str = "parquet"
    partition_by: tuple[str, ...] = ()


def partition_name(run_id: str) -> str:
    """The folder of a run inside a table: ``run_id=<id>``."""
    return f"{RUN_COLUMN}={run_id}"


@dataclass(frozen=True)
class RunPlan:
    """What an incremental run does with the listed files.

    Attributes
    ----------
    todo
        The listed rows to process (new and changed files, and listing errors).
    listed, skipped
        Files listed, and those skipped as covered by the ledger.
    changed
        Path → the run whose rows of it are dropped, for the files processed again.
    missing
        Paths in the ledger that the input no longer lists (their rows are kept).
    """

    todo: DataFrame
    listed: int
    skipped: int
    changed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        """The manifest's ``incremental`` entry."""
        return {
            "listed": self.listed, "skipped": self.skipped, "to_process": self.listed - self.skipped,
            "changed": len(self.changed), "changed_paths": sorted(self.changed)[:LISTED_PATHS],
            "missing": len(self.missing), "missing_paths": self.missing[:LISTED_PATHS],
        }


class IncrementalOutput:
    """The incremental side of one run into ``output`` (see the module docstring).

    Parameters
    ----------
    output
        The output, inside :meth:`~ser_udfs.spark.io.OutputDir.writing` (the lock is held).
    tables
        The tables of the job, each a folder of run partitions.
    identity
        What every row of the output must come from (a model id, a feature config version).
    identity_name
        How messages name it ("model", "feature config").
    """

    def __init__(self, output: OutputDir, tables: Sequence[TableSpec], *, identity: str, identity_name: str) -> None:
        self.output = output
        self.spark: SparkSession = output.spark
        self.tables = {table.name: table for table in tables}
        self.identity = identity
        self.identity_name = identity_name
        self._check_layout()
        self.recover()
        self.ledger = self._read_ledger()
        self._check_identity()

    def _check_layout(self) -> None:
        if self.output.exists(SUCCESS_NAME) and not self.output.exists(LEDGER):
            raise UserError(
                f"{self.output.uri} holds the tables of a full run (no ledger): an incremental run cannot add to it; "
                "give a new --output for incremental runs, or rerun without --incremental to replace it"
            )

    def committed_runs(self) -> list[str]:
        """The runs whose ledger partition is in place."""
        return sorted(name.split("=", 1)[1] for name in self.output.list_names(LEDGER)
                      if name.startswith(f"{RUN_COLUMN}="))

    def recover(self) -> None:
        """Undo what a run that died left: swaps half done, partitions of uncommitted runs."""
        committed = set(self.committed_runs())
        for table in (*self.tables, LEDGER):
            names = self.output.list_names(table)
            for name in names:
                if name.startswith(ASIDE_PREFIX):
                    original = name[len(ASIDE_PREFIX):].rsplit("-by-", 1)[0]
                    if original in names:
                        self.output.delete(f"{table}/{name}")
                    else:
                        log.warning("%s/%s: putting back a partition a dead run had set aside", table, original)
                        self.output.rename(f"{table}/{name}", f"{table}/{original}")
            for name in self.output.list_names(table):
                run_id = name.split("=", 1)[1] if name.startswith(f"{RUN_COLUMN}=") else None
                if run_id is not None and run_id not in committed:
                    log.warning("%s/%s: removing the rows of a run that died before it committed", table, name)
                    self.output.delete(f"{table}/{name}")

    def _read_ledger(self) -> DataFrame | None:
        """Each file's latest ledger row (None for an output without committed runs)."""
        if not self.committed_runs():
            return None
        rows = self.spark.read.schema(f"{LEDGER_DDL}").parquet(self.output.child(LEDGER))
        latest = Window.partitionBy("path").orderBy(F.col("committed_at").desc(), F.col("run_id").desc())
        # Not cached: a cached plan would be found again by a later run in the same session, stale.
        return rows.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")

    def _check_identity(self) -> None:
        if self.ledger is None:
            return
        others = [row.identity for row in self.ledger.select("identity").distinct().collect()
                  if row.identity != self.identity]
        if others:
            raise UserError(
                f"{self.output.uri} holds rows made with another {self.identity_name} ({others[0]}), not {self.identity}; "
                f"never mixed: give another --output for this {self.identity_name}, or rerun without --incremental "
                "to replace the output"
            )

    def plan(self, listed: DataFrame) -> RunPlan:
        """Which of the ``listed`` rows (with ``path``, ``size``, ``modification_time_ms``,
        ``listing_error``) to process; entries that could not be listed are always processed."""
        total = listed.count()
        if self.ledger is None:
            return RunPlan(todo=listed, listed=total, skipped=0)
        known = self.ledger.select("path", F.col("size").alias("_size"),
                                   F.col("modification_time_ms").alias("_mtime"), F.col("run_id").alias("_run"))
        joined = listed.join(known, "path", "left")
        same = (F.col("listing_error").isNull() & F.col("_run").isNotNull()
                & F.col("size").eqNullSafe(F.col("_size")) & F.col("modification_time_ms").eqNullSafe(F.col("_mtime")))
        todo = joined.where(~same)
        changed = {row.path: row._run for row in todo.where(F.col("_run").isNotNull()).select("path", "_run").collect()}
        missing = sorted(row.path for row in known.join(listed.select("path"), "path", "left_anti").collect())
        if missing:
            log.warning("%d files of earlier runs are no longer in the input (their rows are kept), e.g. %s",
                        len(missing), missing[0])
        todo = todo.drop("_size", "_mtime", "_run")
        return RunPlan(todo=todo, listed=total, skipped=total - todo.count(), changed=changed, missing=missing)

    def stage_rewrites(self, staging: str, plan: RunPlan) -> list[tuple[str, str]]:
        """Copies of the earlier partitions holding rows of changed files, without those rows,
        staged as ``staging/_rewrite/TABLE/run_id=<id>``; returns ``(table, run_id)`` of each."""
        by_run: dict[str, list[str]] = {}
        for path, run_id in plan.changed.items():
            by_run.setdefault(run_id, []).append(path)
        staged = OutputDir(self.spark, staging)
        rewrites = []
        for run_id, paths in sorted(by_run.items()):
            for table in self.tables.values():
                name = f"{table.name}/{partition_name(run_id)}"
                if self.output.exists(name):
                    _write(_read(self.spark, self.output.child(name), table).where(~F.col("path").isin(paths)),
                           staged.child(f"_rewrite/{name}"), table)
                    rewrites.append((table.name, run_id))
        return rewrites

    def ledger_rows(self, plan: RunPlan, statuses: DataFrame, run_id: str, committed_at: str) -> DataFrame:
        """The run's ledger rows: each processed file with its ``status`` (``statuses``: path, status);
        ``run_id`` is the name of the partition they go to, not a column of the files."""
        return (plan.todo.select("path", "size", "modification_time_ms")
                .join(statuses, "path", "left")
                .select("path", "size", "modification_time_ms", F.lit(self.identity).alias("identity"),
                        F.coalesce("status", F.lit("error")).alias("status"), F.lit(committed_at).alias("committed_at")))

    def commit(self, staging: str, run_id: str, rewrites: Sequence[tuple[str, str]], ledger: DataFrame,
               manifest: dict[str, Any], *, staged_tables: Sequence[str]) -> None:
        """Move the run into place (steps 1-4 of the module docstring).

        ``staged_tables`` are the folders of ``staging`` holding this run's rows of each table;
        ``ledger`` the run's ledger rows. Refuses, as :meth:`OutputDir.publish` does, when
        another run took the lock over meanwhile.
        """
        self.output.check_lock_held()
        staged = OutputDir(self.spark, staging)
        ledger.coalesce(1).write.mode("overwrite").parquet(staged.child(f"_ledger/{partition_name(run_id)}"))
        staged.write_text(f"_run{MANIFEST_NAME}", _json(manifest))
        for table, old_run in rewrites:
            name = f"{table}/{partition_name(old_run)}"
            aside = f"{table}/{ASIDE_PREFIX}{partition_name(old_run)}-by-{run_id}"
            self.output.rename(name, aside)
            self.output.rename_from(staged.child(f"_rewrite/{name}"), name)
            self.output.delete(aside)
        for table in staged_tables:
            if staged.exists(table):
                self.output.rename_from(staged.child(table), f"{table}/{partition_name(run_id)}")
        self.output.rename_from(staged.child(f"_ledger/{partition_name(run_id)}"), f"{LEDGER}/{partition_name(run_id)}")
        log.info("committed run %s into %s", run_id, self.output.uri)
        self.output.delete(SUCCESS_NAME)
        self.output.rename_from(staged.child(f"_run{MANIFEST_NAME}"), f"{RUNS_DIR}/{run_id}.json")
        self.output.write_text(MANIFEST_NAME, _json(manifest))
        self.output.write_text(SUCCESS_NAME, "")


def _read(spark: SparkSession, uri: str, table: TableSpec) -> DataFrame:
    """A run partition of ``table`` as written (CSV cells as text, untouched)."""
    if table.file_format == "csv":
        return spark.read.option("header", "true").option("escape", '"').option("multiLine", "true").csv(uri)
    return spark.read.parquet(uri)


def _write(frame: DataFrame, uri: str, table: TableSpec) -> None:
    """Write ``frame`` as ``table`` is written, partitioned as it is."""
    writer = frame.write.mode("overwrite")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    if table.file_format == "csv":
        writer.option("header", "true").option("escape", '"').csv(uri)
    else:
        writer.parquet(uri)


def statuses_from(tables: dict[str, DataFrame], ok_table: str, ok_status: str) -> DataFrame:
    """``path, status`` of the processed files: ``ok_status`` for paths in ``tables[ok_table]``,
    ``error`` for those in ``tables["errors"]``."""
    ok = tables[ok_table].select("path").distinct().withColumn("status", F.lit(ok_status))
    errors = tables["errors"].select("path").distinct().withColumn("status", F.lit("error"))
    return ok.unionByName(errors.join(ok.select("path"), "path", "left_anti"))


def committed_at() -> str:
    """Now, as the ledger spells it: UTC to the millisecond, sortable."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"
