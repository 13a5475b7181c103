"""Write the report of a scoring run: one offline HTML page with its counts, charts and the calls to review.

Usage::

    python jobs/report_calls.py --scores /tables/call_emotions --output /reports/2026-11 [--top 10]

Reads ``SCORES/_manifest.json``, the ``calls``, ``channels`` and ``errors`` tables and only the
segments of the ``--top`` calls (Parquet or CSV, as the scoring run wrote them; pyarrow on the
driver, no Spark), and writes ``OUTPUT/index.html`` with ``OUTPUT/images/*.png``: the run's
counts, the distributions of dominant emotion, talk share, overlap and escalation score, and the
calls with the highest escalation score, each with its reasons, per-role figures and timeline.
The page needs no network and no script. The report is written beside ``OUTPUT`` and moved into
place at the end; an existing ``OUTPUT`` must be an earlier report (it is replaced) or empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

if __package__ in (None, ""):  # started as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from jobs._cli import run, setup_logging
from ser_udfs.calls.report import GENERATOR, IMAGES_DIR, REPORT_COLUMNS, RunReport, build_report, review_order
from ser_udfs.calls.tables import probability_columns
from ser_udfs.errors import UserError

log = logging.getLogger("ser_spark.report_calls")

MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
#: Spark's CSV: RFC 4180 quoting, values may hold line breaks.
CSV_PARSING = pcsv.ParseOptions(newlines_in_values=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--scores", required=True, help="output folder of jobs/score_calls.py (local path)")
    parser.add_argument("--output", required=True, help="report folder to write (local path)")
    parser.add_argument("--top", type=_positive_int, default=10, help="calls to review (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _local_path(text: str, flag: str) -> Path:
    """``text`` as a local path (``file:`` URIs too); other URIs are refused."""
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if "://" in text:
        raise UserError(f"{flag} {text} is not a local folder; the report reads and writes local folders only: copy it here first")
    return Path(text)


def read_manifest(scores: Path) -> tuple[dict[str, Any], str]:
    """The scoring output's manifest and when the run finished; refuses what is not a finished scoring output."""
    if not scores.is_dir():
        raise UserError(f"--scores {scores} does not exist; give the --output folder of a jobs/score_calls.py run")
    manifest_path = scores / MANIFEST_NAME
    if not (scores / SUCCESS_NAME).is_file() or not manifest_path.is_file():
        raise UserError(
            f"{scores} is not a finished scoring output (no {SUCCESS_NAME} or {MANIFEST_NAME}); "
            "let jobs/score_calls.py finish writing it, or give another --scores"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {manifest_path} ({exc}); score the calls again") from None
    if not isinstance(manifest, dict) or manifest.get("job") != "score_calls":
        job = manifest.get("job") if isinstance(manifest, dict) else None
        raise UserError(f"{scores} was written by {job or 'an unknown job'}, not jobs/score_calls.py; give a scoring output")
    finished_at = manifest.get("finished_at") or datetime.fromtimestamp(
        manifest_path.stat().st_mtime, tz=timezone.utc
    ).isoformat(timespec="seconds")
    return manifest, str(finished_at)


def read_table(
    scores: Path, name: str, file_format: str, columns: dict[str, str], call_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """``columns`` (name → Arrow type alias) of one table, only the rows of ``call_ids`` when given."""
    folder = scores / name
    if not folder.is_dir():
        raise UserError(f"{scores} has no {name} table; it is not a complete scoring output: score the calls again")
    if file_format == "csv":
        table = _read_csv(folder, columns, call_ids)
    else:
        table = _read_parquet(folder, columns, call_ids)
    return table.to_pandas()


def _empty(columns: dict[str, str]) -> pa.Table:
    return pa.schema([(column, pa.type_for_alias(alias)) for column, alias in columns.items()]).empty_table()


def _missing_columns(folder: Path, missing: Sequence[str]) -> UserError:
    return UserError(
        f"{folder} has no column {', '.join(sorted(missing))}: it was written by an older jobs/score_calls.py; "
        "score the calls again"
    )


def _read_parquet(folder: Path, columns: dict[str, str], call_ids: Sequence[str] | None) -> pa.Table:
    dataset = ds.dataset(str(folder), format="parquet")
    if not dataset.files:
        return _empty(columns)
    missing = set(columns) - set(dataset.schema.names)
    if missing:
        raise _missing_columns(folder, missing)
    where = None if call_ids is None else ds.field("call_id").isin(list(call_ids))
    return dataset.to_table(columns=list(columns), filter=where)


def _part_files(folder: Path) -> list[Path]:
    """A Spark-written folder's data files, in its partition folders too (an incremental output's
    ``run_id=...``), not ``_SUCCESS``, ``.crc``, hidden folders or empty files."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.stat().st_size > 0
        and not any(part.startswith(("_", ".")) for part in path.relative_to(folder).parts)
    )


def _read_csv(folder: Path, columns: dict[str, str], call_ids: Sequence[str] | None) -> pa.Table:
    """CSV parts with a header, typed by ``columns``; read in batches, keeping only the rows of ``call_ids``."""
    options = pcsv.ConvertOptions(
        include_columns=list(columns),
        column_types={column: pa.type_for_alias(alias) for column, alias in columns.items()},
        strings_can_be_null=True, quoted_strings_can_be_null=False,
    )
    wanted = None if call_ids is None else pa.array(list(call_ids), pa.string())
    tables = [_empty(columns)]
    for part in _part_files(folder):
        try:
            reader = pcsv.open_csv(part, parse_options=CSV_PARSING, convert_options=options)
            for batch in reader:
                if wanted is not None:
                    batch = batch.filter(pc.is_in(batch.column("call_id"), value_set=wanted))
                tables.append(pa.Table.from_batches([batch]))
        except KeyError:
            raise _missing_columns(folder, set(columns) - set(_csv_header(part))) from None
        except pa.ArrowInvalid as exc:
            raise UserError(f"cannot read {part}: {str(exc).splitlines()[0]}; score the calls again") from None
    return pa.concat_tables(tables)


def _csv_header(part: Path) -> list[str]:
    """The column names of a CSV part (from its first block only)."""
    return pcsv.open_csv(part, parse_options=CSV_PARSING).schema.names


def check_report_folder(output: Path) -> None:
    """Refuse an ``output`` that exists and is neither empty nor a report of this job."""
    if not output.exists():
        return
    if not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the report")
    index = output / "index.html"
    if index.is_file():
        with index.open(encoding="utf-8", errors="replace") as stream:
            if f'<meta name="generator" content="{GENERATOR}">' in stream.read(4096):
                return
    if any(output.iterdir()):
        raise UserError(
            f"--output {output} holds files that are not a report of jobs/report_calls.py; "
            "give a new or empty folder, or remove it"
        )


def write_report(output: Path, report: RunReport) -> None:
    """Write ``report`` into a temporary sibling of ``output``, then move it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        (staging / IMAGES_DIR).mkdir()
        for name, png in report.images.items():
            (staging / IMAGES_DIR / name).write_bytes(png)
        (staging / "index.html").write_text(report.html, encoding="utf-8")
        staging.chmod(0o755)
        if output.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{output.name}.previous-", dir=output.parent))
            os.replace(output, previous / "report")
            os.replace(staging, output)
            shutil.rmtree(previous)
        else:
            os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    scores, output = _local_path(args.scores, "--scores"), _local_path(args.output, "--output")
    manifest, finished_at = read_manifest(scores)
    check_report_folder(output)
    file_format = manifest.get("config", {}).get("output", {}).get("format", "parquet")
    tables = {name: read_table(scores, name, file_format, REPORT_COLUMNS[name]) for name in ("calls", "channels", "errors")}
    review_ids = list(review_order(tables["calls"], args.top)["call_id"])
    labels = list(manifest.get("model", {}).get("labels", []))
    probabilities = probability_columns(labels)
    segments = read_table(
        scores, "segments", file_format, {**REPORT_COLUMNS["segments"], **dict.fromkeys(probabilities, "double")},
        call_ids=review_ids,
    )
    log.info("%d calls scored, %d to review (%d segments)", len(tables["calls"]), len(review_ids), len(segments))
    report = build_report(
        manifest=manifest, source=str(scores), finished_at=finished_at, **tables, segments=segments,
        top=args.top, probability_columns=probabilities,
    )
    write_report(output, report)
    log.info("report: %s (%d images)", output / "index.html", len(report.images))
    return 0


def cli() -> None:
    """The console entry point of an installed copy (``pyproject.toml``'s ``[project.scripts]``)."""
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
