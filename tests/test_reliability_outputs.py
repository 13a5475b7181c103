"""Job outputs: one writer at a time (a lock a killed run cannot leave stuck), refused runs that
touch nothing, a full disk that ends in one sentence and leaves the previous output as it was."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from jobs import extract_features, score_calls
from jobs._cli import run
from ser_udfs.errors import UserError
from ser_udfs.spark.faults import DELAY_ENV
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from tests.builders import (
    assert_tables_equal, call_bundle, extraction_args, start_extraction_job, wait_for_staged_files, write_small_corpus,
)
from tests.torture import extraction_tables

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
LOCK = "_lock.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight RAVDESS-named clips and two bad files: ten listed files."""
    return write_small_corpus(tmp_path_factory.mktemp("outputs-corpus"))



@pytest.fixture(scope="module")
def finished(spark, corpus: Path, tmp_path_factory) -> Path:
    """A finished extraction output of ``corpus`` (never written again: tests copy it)."""
    output = tmp_path_factory.mktemp("finished") / "table"
    assert extract_features.main(extraction_args(corpus, output, "read.files_per_partition=2")) == 0
    return output


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes, and every folder."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def _copy_output(source: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(source, destination)
    return destination



# --- one writer at a time ------------------------------------------------------------------------


@pytest.mark.slow
def test_second_job_into_the_same_output_is_refused_and_the_first_keeps_all_its_rows(
    spark, corpus: Path, finished: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "table"
    log = tmp_path / "first.log"
    first = start_extraction_job(corpus, output, log, {DELAY_ENV: "1.0"}, "read.files_per_partition=2", "output.rows_per_batch=1")
    try:
        wait_for_staged_files(first, output, log)
        assert run(extract_features.main, extraction_args(corpus, output)) == 2
        error = capsys.readouterr().err.strip()
        assert "is being written by another run" in error and f"pid {first.pid}" in error, error
        assert len(error.splitlines()) == 1, error
        assert first.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["counts"]["files_listed"] == 10 and manifest["counts"]["clips"] == 8
    for got, expected in zip(extraction_tables(output), extraction_tables(finished)):
        assert_tables_equal(got, expected)
    assert not (output / LOCK).exists() and not list(output.glob("_staging-*"))


@pytest.mark.slow
def test_lock_left_by_a_job_killed_with_sigkill_does_not_block_the_next_run(
    spark, corpus: Path, finished: Path, tmp_path: Path, caplog
) -> None:
    output = _copy_output(finished, tmp_path / "table")
    log = tmp_path / "killed.log"
    job = start_extraction_job(corpus, output, log, {DELAY_ENV: "1.0"}, "read.files_per_partition=2", "output.rows_per_batch=1")
    try:
        wait_for_staged_files(job, output, log)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    lock = json.loads((output / LOCK).read_text())
    assert lock["pid"] == job.pid and lock["host"] == socket.gethostname()
    # The killed run only staged: the finished output it was replacing is still finished and whole.
    assert (output / "_SUCCESS").exists() and (output / "_manifest.json").exists()
    for got, expected in zip(extraction_tables(output), extraction_tables(finished)):
        assert_tables_equal(got, expected)

    with caplog.at_level("WARNING"):
        assert extract_features.main(extraction_args(corpus, output)) == 0
    assert any("taking over the lock" in r.getMessage() and str(job.pid) in r.getMessage() for r in caplog.records)
    assert not (output / LOCK).exists() and not list(output.glob("_staging-*"))
    for got, expected in zip(extraction_tables(output), extraction_tables(finished)):
        assert_tables_equal(got, expected)


def _write_lock(output: Path, **fields: object) -> None:
    output.mkdir(parents=True, exist_ok=True)
    lock = {"job": "extract_features", "run_id": "0123456789ab", "pid": os.getpid(), "host": socket.gethostname(),
            "started_s": time.time(), "started": "now"}
    (output / LOCK).write_text(json.dumps({**lock, **fields}))


def test_locks_of_live_runs_refuse_and_stale_ones_are_taken_over(spark, tmp_path: Path, caplog) -> None:
    from ser_udfs.spark.io import OutputDir

    output = OutputDir(spark, str(tmp_path / "out"))
    _write_lock(tmp_path / "out")  # this very process: alive
    with pytest.raises(UserError, match="is being written by another run") as refused:
        with output.writing("extract_features"):
            pass
    assert "\n" not in str(refused.value) and LOCK in str(refused.value)
    assert json.loads((tmp_path / "out" / LOCK).read_text())["run_id"] == "0123456789ab"  # left alone

    cases = {
        "owner gone": {"pid": _dead_pid()},
        "other host, too old": {"host": "elsewhere.invalid", "started_s": time.time() - 48 * 3600},
        "same pid, another process": {"pid_start": "not this process"},
    }
    for what, fields in cases.items():
        _write_lock(tmp_path / "out", **fields)
        (tmp_path / "out" / "_staging-0123456789ab").mkdir(exist_ok=True)
        caplog.clear()
        with caplog.at_level("WARNING"):
            with output.writing("extract_features", stale_after_s=24 * 3600) as staging:
                assert staging.startswith(output.uri) and "_staging-" in staging
                assert not (tmp_path / "out" / "_staging-0123456789ab").exists(), what
                assert json.loads((tmp_path / "out" / LOCK).read_text())["pid"] == os.getpid()
        assert any("taking over the lock" in r.getMessage() for r in caplog.records), what
        assert not (tmp_path / "out" / LOCK).exists(), what

    _write_lock(tmp_path / "out", host="elsewhere.invalid", started_s=time.time() - 60)
    with pytest.raises(UserError, match="elsewhere.invalid"):
        with output.writing("extract_features", stale_after_s=24 * 3600):
            pass


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_run_that_dies_while_it_replaces_the_tables_leaves_an_output_readers_refuse(
    spark, corpus: Path, finished: Path, tmp_path: Path, monkeypatch
) -> None:
    from ser_udfs.spark.feature_table import read_feature_table
    from ser_udfs.spark.io import OutputDir, read_manifest_json

    output = _copy_output(finished, tmp_path / "table")
    real_move = OutputDir.move_into_place
    moved: list[str] = []

    def dies_after_the_first_table(self, staged_uri: str, name: str) -> None:
        if moved:
            raise KeyboardInterrupt("killed")
        real_move(self, staged_uri, name)
        moved.append(name)

    monkeypatch.setattr(OutputDir, "move_into_place", dies_after_the_first_table)
    with pytest.raises(KeyboardInterrupt):
        extract_features.main(extraction_args(corpus, output))
    assert moved == ["features"] and not (output / "_SUCCESS").exists() and not (output / "_manifest.json").exists()
    with pytest.raises(UserError, match="is not a finished output"):
        read_manifest_json(spark, str(output))
    with pytest.raises(UserError, match="is not a finished output"):
        read_feature_table(spark, str(output), feature_columns=["stats"])
    monkeypatch.undo()
    assert extract_features.main(extraction_args(corpus, output)) == 0
    for got, expected in zip(extraction_tables(output), extraction_tables(finished)):
        assert_tables_equal(got, expected)


# --- refused runs touch nothing ------------------------------------------------------------------


def test_refused_extraction_leaves_a_finished_output_as_it_was(
    spark, corpus: Path, finished: Path, tmp_path: Path, capsys
) -> None:
    output = _copy_output(finished, tmp_path / "table")
    before = snapshot(output)
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\n{corpus}/Actor_01/03-01-05-01-01-01-01.wav,angry\nhttp://example.com/x.wav,sad\n")
    refused = {
        "http: path in the manifest": ["--manifest", str(manifest)],
        "mistyped --input": ["--input", str(corpus) + "-typo"],
        "nothing to extract": ["--input", str(tmp_path / "empty-folder")],
    }
    (tmp_path / "empty-folder").mkdir()
    for what, flags in refused.items():
        for target in (output, tmp_path / f"new-{len(what)}"):
            status = run(extract_features.main, [*flags, "--output", str(target), "--log-level", "WARNING"])
            error = capsys.readouterr().err.strip()
            assert status == 2 and len(error.splitlines()) == 1, (what, error)
            assert snapshot(output) == before, what
            assert target == output or not target.exists(), what


def test_refused_scoring_leaves_a_finished_output_as_it_was(spark, tmp_path: Path, capsys) -> None:
    calls = tmp_path / "calls"
    write_call(calls / "a.wav", synth_call([Turn(0, 1.0, 4.0, "angry")], duration_s=6.0, channels=1, seed=3), 8000)
    bundle = call_bundle(tmp_path / "bundle")
    output = tmp_path / "scores"
    base = ["--model", str(bundle), "--log-level", "WARNING"]
    assert score_calls.main(["--input", str(calls), *base, "--output", str(output)]) == 0
    before = snapshot(output)
    refused = {
        "mistyped --input": ["--input", str(calls) + "-typo", *base],
        "no calls": ["--input", str(tmp_path / "bundle"), *base],
        "missing bundle": ["--input", str(calls), "--model", str(tmp_path / "nowhere"), "--log-level", "WARNING"],
        "--plot matching no call": ["--input", str(calls), *base, "--plot", "no-such-call"],
    }
    for what, flags in refused.items():
        for target in (output, tmp_path / "new"):
            status = run(score_calls.main, [*flags, "--output", str(target)])
            error = capsys.readouterr().err.strip()
            assert status == 2 and len(error.splitlines()) == 1, (what, error)
            assert snapshot(output) == before, what
            assert target == output or not target.exists(), what


# --- a full disk ---------------------------------------------------------------------------------


def test_full_disk_ends_in_one_sentence_and_keeps_the_previous_output(
    spark, corpus: Path, finished: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from py4j.protocol import Py4JJavaError

    from ser_udfs.spark import extract_driver

    output = _copy_output(finished, tmp_path / "table")
    before = snapshot(output)
    real_writer = extract_driver._extract_python_writer

    def python_error(*args, **kwargs):
        real_writer(*args, **kwargs)  # the staging folder is full of files when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", str(output / "x.parquet"))

    def java_error(*args, **kwargs):
        real_writer(*args, **kwargs)
        exception = spark.sparkContext._jvm.java.io.IOException("No space left on device")
        raise Py4JJavaError("An error occurred while calling o123.parquet.\n", exception)

    for what, failing in (("OSError", python_error), ("Java IOException", java_error)):
        monkeypatch.setattr(extract_driver, "_extract_python_writer", failing)
        for target in (output, tmp_path / "new"):
            status = run(extract_features.main, extraction_args(corpus, target))
            error = capsys.readouterr().err.strip()
            assert status == 1, (what, error)
            assert len(error.splitlines()) == 1 and "no space left" in error.lower() and "free" in error, (what, error)
            assert "Traceback" not in error
            assert snapshot(output) == before, what
            assert not (tmp_path / "new").exists(), what
