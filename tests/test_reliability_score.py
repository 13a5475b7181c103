"""The scoring job on the torture corpus: it finishes, every entry is scored or reported once,
silence is flagged as ``no_speech``, no number is NaN, and a task failing once changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import score_calls
from ser_udfs.spark.faults import FAIL_ONCE_ENV
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from tests import torture
from tests.builders import STEREO_TURNS, assert_tables_equal, call_bundle

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return call_bundle(tmp_path_factory.mktemp("bundle") / "tiny-logreg")


@pytest.fixture(scope="module")
def torture_root(tmp_path_factory) -> Iterator[Path]:
    # the root's name holds glob characters: an existing folder must be listed as it is
    root = torture.build_corpus(tmp_path_factory.mktemp("torture") / "calls [2024]")
    yield root
    torture.unlock(root)


@pytest.fixture(scope="module")
def scored(spark, bundle: Path, torture_root: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("scored") / "scores"
    argv = ["--input", str(torture_root), "--model", str(bundle), "--output", str(output), "--log-level", "WARNING"]
    with pytest.MonkeyPatch.context() as patch:
        if torture.locked_is_readable(torture_root):  # running as root: refuse the folder as the kernel would
            patch.setattr(os, "scandir", torture.deny_listing(torture_root / torture.LOCKED_DIR))
        assert score_calls.main(argv) == 0
    return output


def test_every_entry_is_scored_flagged_or_reported_once(scored: Path, torture_root: Path) -> None:
    calls = pd.read_parquet(scored / "calls")
    errors = pd.read_parquet(scored / "errors")
    names = [torture.relative_name(p, torture_root) for p in [*calls["path"], *errors["path"]]]
    assert len(names) == len(set(names))
    outcomes = {
        torture.relative_name(p, torture_root): "no_speech" if status == "no_speech" else "call"
        for p, status in zip(calls["path"], calls["status"])
    }
    outcomes.update((torture.relative_name(p, torture_root), k) for p, k in zip(errors["path"], errors["error_kind"]))
    cases = torture.present_cases(torture_root)
    expected = {case.path: torture.scoring_outcome(case) for case in cases if case.expect != "ignored"}
    # a clip of speech may still hold too little of it for a window: "call" accepts either status
    accepted = {k: "call" if expected.get(k) == "call" and v == "no_speech" else v for k, v in outcomes.items()}
    assert accepted == expected
    messages = dict(zip(errors["path"].map(lambda p: torture.relative_name(p, torture_root)), errors["error_message"]))
    for case in cases:
        if torture.scoring_outcome(case) not in ("call", "no_speech", "ignored"):
            assert case.message in messages[case.path], (case.path, messages[case.path])


def test_counts_reconcile_and_no_number_is_nan(scored: Path, torture_root: Path) -> None:
    manifest = json.loads((scored / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["calls_listed"] == len(torture.expected_outcomes(torture.present_cases(torture_root)))
    assert counts["calls_scored"] + counts["errors"] == counts["calls_listed"]
    assert (scored / "_SUCCESS").exists()
    for table in ("segments", "turns", "calls"):
        data = pq.read_table(scored / table)
        for name in data.column_names:
            column = data.column(name)
            if column.type in ("double", "float"):
                assert not pc.any(pc.is_nan(column)).as_py(), f"{table}.{name} holds NaN"
    calls = pd.read_parquet(scored / "calls")
    shares = [share for pairs in calls["emotion_share"] if pairs is not None for _, share in pairs]
    assert shares and np.isfinite(shares).all()


@pytest.mark.slow
def test_scoring_task_failing_once_per_partition_is_retried_without_duplicates(
    bundle: Path, tmp_path: Path, spark
) -> None:
    calls = tmp_path / "calls"
    write_call(calls / "stereo.wav", synth_call(STEREO_TURNS, duration_s=18.0, seed=1), 8000, encoding="ulaw")
    for seed in range(3):
        mono = synth_call([Turn(0, 1.0, 4.0, "angry")], duration_s=6.0, channels=1, seed=10 + seed)
        write_call(calls / f"mono-{seed}.flac", mono, 8000, encoding="flac")
    args = ["--input", str(calls), "--model", str(bundle), "--log-level", "WARNING",
            "--set", "read.files_per_partition=1", "--set", "output.rows_per_batch=1"]
    assert score_calls.main([*args, "--output", str(tmp_path / "clean")]) == 0
    env = {
        **os.environ, "SER_SPARK_MASTER": "local[2,4]", "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable, FAIL_ONCE_ENV: str(tmp_path / "markers"),
    }
    job = subprocess.run(
        [sys.executable, "-m", "jobs.score_calls", *args, "--output", str(tmp_path / "retried")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    manifest = json.loads((tmp_path / "retried" / "_manifest.json").read_text())
    assert len(list((tmp_path / "markers").iterdir())) == manifest["spark"]["partitions"] == 4
    keys = {"segments": ["call_id", "channel", "start_s"], "turns": ["call_id", "channel", "turn"], "calls": ["call_id"],
            "errors": ["path"]}
    for table, key in keys.items():
        retried = pd.read_parquet(tmp_path / "retried" / table).sort_values(key).reset_index(drop=True)
        clean = pd.read_parquet(tmp_path / "clean" / table).sort_values(key).reset_index(drop=True)
        assert_tables_equal(retried, clean, obj=table)


def test_spark_read_mode_scores_names_hadoop_cannot_address_like_python_does(
    spark, bundle: Path, tmp_path: Path
) -> None:
    """``read.mode=spark`` with a ``:`` in a name, bytes that are not UTF-8 and a headerless file:
    the job finishes, and its tables equal those of the Python workers reading every file."""
    picked = ("names/", "bad/call.raw", "odd/clipped.wav")
    cases = tuple(case for case in torture.EXTRACT_CASES if case.path.startswith(picked))
    root = torture.build_corpus(tmp_path / "calls", cases)
    tables = {}
    for mode in ("python", "spark"):
        output = tmp_path / mode
        argv = ["--input", str(root), "--model", str(bundle), "--output", str(output), "--log-level", "WARNING",
                "--set", f"read.mode={mode}"]
        assert score_calls.main(argv) == 0
        tables[mode] = {
            table: pd.read_parquet(output / table).sort_values("path").reset_index(drop=True)
            for table in ("calls", "errors")
        }
    for table in ("calls", "errors"):
        assert_tables_equal(tables["spark"][table], tables["python"][table], obj=table)
    present = torture.present_cases(root, cases)
    outcomes = {torture.relative_name(p, root): "call" for p in tables["spark"]["calls"]["path"]}
    outcomes.update(
        (torture.relative_name(p, root), kind)
        for p, kind in zip(tables["spark"]["errors"]["path"], tables["spark"]["errors"]["error_kind"])
    )
    assert outcomes == {case.path: torture.scoring_outcome(case) for case in present}
