"""The documented ways to start a job work as written, from a shell without the project's
environment activated, and Spark logs only warnings."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.builders import REPO, write_small_corpus

#: A shell that has not activated .venv: no PYSPARK_*, SPARK_*, VIRTUAL_ENV, and a PATH without it.
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


def _spark_info_lines(text: str) -> list[str]:
    """Lines Spark's JVM logged at INFO (its log4j pattern: ``26/12/01 15:53:24 INFO SparkContext: ...``)."""
    return [line for line in text.splitlines() if re.match(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ", line)]


@pytest.mark.slow
def test_ser_submit_runs_a_job_from_a_bare_shell_with_quiet_spark_logs(tmp_path: Path) -> None:
    corpus = write_small_corpus(tmp_path / "corpus")
    command = [str(REPO / "scripts" / "ser-submit"), "jobs/extract_features.py", "--input", str(corpus),
               "--output", str(tmp_path / "features"), "--set", "mel.n_mels=32"]
    done = subprocess.run(command, cwd=REPO, env=BARE_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "features" / "_SUCCESS").exists()
    assert _spark_info_lines(done.stderr + done.stdout) == [], done.stderr[-3000:]


def test_ser_submit_says_what_to_do_without_the_environment(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "scripts"
    copy.mkdir(parents=True)
    (copy / "ser-submit").write_bytes((REPO / "scripts" / "ser-submit").read_bytes())
    done = subprocess.run(["bash", str(copy / "ser-submit"), "jobs/train.py"], env=BARE_ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "run make setup" in done.stderr
