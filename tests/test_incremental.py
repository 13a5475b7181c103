"""Incremental runs of the scoring and extraction jobs: only new or changed files, exactly once,
whatever a run that died left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest

from jobs import extract_features, score_calls
from jobs._cli import run
from ser_udfs.spark.faults import DELAY_ENV
from ser_udfs.spark.io import OutputDir
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from tests.builders import (
    call_bundle, extraction_args, start_extraction_job, start_job, wait_for_staged_files, write_small_corpus,
)

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return call_bundle(tmp_path_factory.mktemp("bundle") / "tiny-logreg")


def _write_calls(folder: Path, names: list[str], *, seed: int = 0) -> None:
    for index, name in enumerate(names):
        turns = [Turn(0, 0.5, 3.0, "angry"), Turn(1, 3.5, 6.0, "sad")]
        write_call(folder / name, synth_call(turns, duration_s=7.0, seed=seed + index), 8000, encoding="ulaw")


def _score(bundle: Path, calls: Path, output: Path, *extra: str) -> int:
    return run(score_calls.main, ["--input", str(calls), "--model", str(bundle), "--output", str(output),
                                  "--incremental", "--log-level", "WARNING", *extra])


def _manifest(output: Path) -> dict:
    return json.loads((output / "_manifest.json").read_text())


def _table(output: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(output / name)


def _assert_whole(output: Path, paths: set[str]) -> None:
    """Every call of ``paths`` once in calls and the ledger, its rows of every table from one run."""
    calls = _table(output, "calls")
    assert sorted(calls["path"]) == sorted(paths)
    ledger = _table(output, "ledger")
    latest = ledger.sort_values("committed_at").groupby("path").tail(1)
    assert set(latest["path"]) == paths
    committed = set(ledger["run_id"].astype(str))
    for name in ("segments", "turns", "channels", "calls"):
        table = _table(output, name)
        assert set(table["run_id"].astype(str)) <= committed, name
        runs = table.groupby("path")["run_id"].nunique()
        assert (runs == 1).all(), f"{name}: rows of one call from several runs: {runs[runs > 1].to_dict()}"
        by_path = dict(zip(latest["path"], latest["run_id"].astype(str)))
        assert all(by_path[path] == str(run_id) for path, run_id in zip(table["path"], table["run_id"])), name
    segments = _table(output, "segments")
    assert not segments.duplicated(["call_id", "channel", "start_s"]).any()


def test_new_calls_are_scored_once_changed_ones_again_and_missing_ones_kept(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav", "b.wav", "c.wav"])
    assert _score(bundle_dir, calls, output) == 0
    counts = _manifest(output)["counts"]
    assert (counts["calls_listed"], counts["calls_skipped"], counts["calls_scored"]) == (3, 0, 3)

    _write_calls(calls, ["d.wav", "e.wav"], seed=10)
    assert _score(bundle_dir, calls, output) == 0
    counts = _manifest(output)["counts"]
    assert (counts["calls_listed"], counts["calls_skipped"], counts["calls_scored"], counts["errors"]) == (5, 3, 2, 0)
    uris = {f"file:{calls / name}" for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav")}
    _assert_whole(output, uris)

    assert _score(bundle_dir, calls, output) == 0  # nothing new: nothing scored
    assert _manifest(output)["counts"]["calls_scored"] == 0
    _assert_whole(output, uris)

    _write_calls(calls, ["b.wav"], seed=20)  # b changed: scored again, its old rows gone
    os.utime(calls / "b.wav", (2e9, 2e9))
    before = _table(output, "calls").set_index("path")
    assert _score(bundle_dir, calls, output) == 0
    manifest = _manifest(output)
    assert manifest["counts"]["calls_scored"] == 1 and manifest["incremental"]["changed"] == 1
    after = _table(output, "calls").set_index("path")
    changed = f"file:{calls / 'b.wav'}"
    assert str(after.loc[changed, "run_id"]) == manifest["run_id"] != str(before.loc[changed, "run_id"])
    unchanged = sorted(uris - {changed})
    pd.testing.assert_frame_equal(after.loc[unchanged].drop(columns="run_id"),
                                  before.loc[unchanged].drop(columns="run_id"))
    _assert_whole(output, uris)

    (calls / "e.wav").unlink()  # gone from the input: its rows stay, and the run says so
    assert _score(bundle_dir, calls, output) == 0
    manifest = _manifest(output)
    assert manifest["incremental"]["missing"] == 1 and manifest["incremental"]["missing_paths"] == [f"file:{calls / 'e.wav'}"]
    assert manifest["counts"]["calls_listed"] == 4 and manifest["counts"]["calls_skipped"] == 4
    _assert_whole(output, uris)
    assert len(list((output / "_runs").glob("*.json"))) == 5
    assert not list(output.glob("_staging-*")) and not (output / "_lock.json").exists()

    # the run report reads an incremental output as it reads a full one
    from jobs.report_calls import main as report_main

    assert run(report_main, ["--scores", str(output), "--output", str(tmp_path / "report")]) == 0
    assert "Calls to review" in (tmp_path / "report" / "index.html").read_text()


def test_csv_tables_grow_and_a_changed_call_is_rewritten_in_csv(spark, bundle_dir: Path, tmp_path: Path) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav", "b.wav"])
    assert _score(bundle_dir, calls, output, "--format", "csv") == 0
    _write_calls(calls, ["a.wav"], seed=50)
    os.utime(calls / "a.wav", (2e9, 2e9))
    _write_calls(calls, ["c.wav"], seed=60)
    assert _score(bundle_dir, calls, output, "--format", "csv") == 0
    assert _manifest(output)["counts"]["calls_scored"] == 2

    def read(name: str) -> pd.DataFrame:
        parts = sorted((output / name).glob("run_id=*/part-*.csv"))
        return pd.concat([pd.read_csv(part).assign(run_id=part.parent.name) for part in parts])

    segments = read("segments")
    assert sorted(read("calls")["path"]) == sorted(f"file:{calls / name}" for name in ("a.wav", "b.wav", "c.wav"))
    assert (segments.groupby("path")["run_id"].nunique() == 1).all()
    assert json.loads(read("calls").set_index("path").loc[f"file:{calls / 'b.wav'}", "scored_channels"]) == [0, 1]
    from jobs.report_calls import main as report_main

    assert run(report_main, ["--scores", str(output), "--output", str(tmp_path / "report")]) == 0


def test_another_model_is_refused_and_full_and_incremental_outputs_are_not_mixed(
    spark, bundle_dir: Path, tmp_path: Path, capsys
) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav"])
    assert _score(bundle_dir, calls, output) == 0
    other = call_bundle(tmp_path / "other-logreg")
    capsys.readouterr()
    assert _score(other, calls, output) == 2
    error = capsys.readouterr().err
    assert "another model" in error and "never mixed" in error and len(error.strip().splitlines()) == 1
    # a full run replaces the incremental output, ledger and all ...
    assert run(score_calls.main, ["--input", str(calls), "--model", str(other), "--output", str(output),
                                  "--log-level", "WARNING"]) == 0
    assert not (output / "ledger").exists() and not (output / "_runs").exists()
    # ... and an incremental run does not add to a full one
    assert _score(other, calls, output) == 2
    assert "tables of a full run" in capsys.readouterr().err


def test_a_second_run_is_refused_while_one_holds_the_lock(spark, bundle_dir: Path, tmp_path: Path, capsys) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav"])
    output.mkdir()
    (output / "_lock.json").write_text(json.dumps({
        "job": "score_calls", "run_id": "0123456789ab", "pid": os.getpid(), "host": os.uname().nodename,
        "started_s": 9e99, "started": "now",
    }))
    assert _score(bundle_dir, calls, output) == 2
    assert "is being written by another run" in capsys.readouterr().err
    assert not (output / "ledger").exists()


def _fail_on(monkeypatch: pytest.MonkeyPatch, predicate) -> None:
    """Make the next rename into an output that ``predicate(source_uri, name)`` picks raise (a run dying there)."""
    original = OutputDir.rename_from

    def rename_from(self, uri: str, name: str) -> None:
        if predicate(uri, name):
            raise RuntimeError(f"injected death before moving {uri} to {name}")
        original(self, uri, name)

    monkeypatch.setattr(OutputDir, "rename_from", rename_from)


@pytest.mark.parametrize("dies", ["before its ledger", "in a swap"])
def test_a_run_that_dies_in_its_commit_is_undone_and_its_calls_scored_again(
    spark, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav", "b.wav"])
    assert _score(bundle_dir, calls, output) == 0
    if dies == "before its ledger":  # a new call, its rows moved in, the ledger not
        _write_calls(calls, ["c.wav"], seed=5)
        predicate = lambda uri, name: name.startswith("ledger/")  # noqa: E731
    else:  # a changed call: its earlier partition set aside, the copy without it not yet in place
        _write_calls(calls, ["a.wav"], seed=30)
        os.utime(calls / "a.wav", (2e9, 2e9))
        predicate = lambda uri, name: "/_rewrite/calls/" in uri  # noqa: E731
    with monkeypatch.context() as patch:
        _fail_on(patch, predicate)
        with pytest.raises(RuntimeError, match="injected death"):
            _score(bundle_dir, calls, output)
    if dies == "before its ledger":
        assert len(_table(output, "calls")) == 3 and len(_table(output, "ledger")) == 2  # c's rows, no ledger entry
    else:
        assert list((output / "calls").glob("_replaced-*"))
    assert _score(bundle_dir, calls, output) == 0
    assert _manifest(output)["counts"]["calls_scored"] == 1
    assert not list((output / "calls").glob("_replaced-*"))
    _assert_whole(output, {f"file:{path}" for path in calls.glob("*.wav")})


@pytest.mark.slow
def test_a_killed_scoring_run_leaves_nothing_committed_and_the_rerun_completes(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    calls, output = tmp_path / "calls", tmp_path / "scores"
    _write_calls(calls, ["a.wav", "b.wav"])
    assert _score(bundle_dir, calls, output) == 0
    _write_calls(calls, ["c.wav", "d.wav", "e.wav", "f.wav"], seed=40)
    argv = ["--input", str(calls), "--model", str(bundle_dir), "--output", str(output), "--incremental",
            "--set", "read.files_per_partition=1", "--set", "output.rows_per_batch=1"]
    log = tmp_path / "killed.log"
    job = start_job("score_calls", argv, log, {DELAY_ENV: "1.0"})
    try:
        wait_for_staged_files(job, output, log)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    _assert_whole(output, {f"file:{calls / name}" for name in ("a.wav", "b.wav")})  # the killed run only staged
    assert _score(bundle_dir, calls, output) == 0
    assert _manifest(output)["counts"]["calls_scored"] == 4
    _assert_whole(output, {f"file:{calls / name}" for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav")})


# --- extraction ----------------------------------------------------------------------------------


def _extract(corpus: Path, output: Path) -> int:
    return run(extract_features.main, [*extraction_args(corpus, output), "--incremental"])


def _features(output: Path) -> pd.DataFrame:
    return pd.read_parquet(output / "features", columns=["path", "augmentation", "corpus", "run_id"])


@pytest.mark.slow
def test_incremental_extraction_adds_new_clips_replaces_changed_ones_and_survives_a_kill(
    spark, tmp_path: Path, capsys
) -> None:
    import soundfile as sf

    from ser_udfs.spark.feature_table import read_feature_table

    corpus = write_small_corpus(tmp_path / "corpus")
    later = sorted((corpus / "Actor_02").iterdir())[:2]
    aside = tmp_path / "later"
    aside.mkdir()
    for clip in later:
        shutil.move(str(clip), aside / clip.name)
    output = tmp_path / "table"
    assert _extract(corpus, output) == 0
    counts = _manifest(output)["counts"]
    assert (counts["files_listed"], counts["files_skipped"], counts["clips"], counts["errors"]) == (8, 0, 6, 2)

    for clip in aside.iterdir():
        shutil.move(str(clip), corpus / "Actor_02" / clip.name)
    log = tmp_path / "killed.log"
    job = start_extraction_job(corpus, output, log, {DELAY_ENV: "1.0"}, "read.files_per_partition=1",
                               "output.rows_per_batch=1")
    try:
        wait_for_staged_files(job, output, log)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    assert len(_features(output)) == 6  # the killed run committed nothing
    assert _extract(corpus, output) == 0
    counts = _manifest(output)["counts"]
    assert (counts["files_listed"], counts["files_skipped"], counts["clips"], counts["errors"]) == (10, 8, 2, 0)
    features = _features(output)
    assert len(features) == 8 and features["path"].is_unique and set(features["corpus"]) == {"ravdess"}

    victim = sorted((corpus / "Actor_01").iterdir())[0]
    wave, rate = sf.read(victim)
    sf.write(victim, wave * 0.5, rate)
    os.utime(victim, (2e9, 2e9))
    assert _extract(corpus, output) == 0
    manifest = _manifest(output)
    assert manifest["counts"]["clips"] == 1 and manifest["incremental"]["changed"] == 1
    features = _features(output)
    assert len(features) == 8 and features["path"].is_unique
    assert str(features.set_index("path").loc[f"file:{victim}", "run_id"]) == manifest["run_id"]
    assert len(pd.read_parquet(output / "errors")) == 2

    rows, _ = read_feature_table(spark, str(output), feature_columns=["stats"])  # what training reads
    assert len(rows) == 8 and rows["path"].is_unique

    other = [*extraction_args(corpus, output), "--set", "mel.n_mels=40", "--incremental"]
    assert run(extract_features.main, other) == 2  # another feature config: refused, never mixed
    assert "another feature config" in capsys.readouterr().err
    assert len(_features(output)) == 8
