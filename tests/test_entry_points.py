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


@pytest.mark.slow
def test_an_installed_copy_runs_from_another_folder_with_its_own_defaults(tmp_path: Path) -> None:
    import sys

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**BARE_ENV, "PYTHONPATH": str(target)}  # the installed copy, not the checkout
    for script, argv in (("ser-extract", ["--input", "in", "--output", "out"]),
                         ("ser-score", ["--input", "in", "--model", "m", "--output", "out"]),
                         ("ser-train", ["--features", "t", "--model", "cnn", "--output", "out"])):
        done = subprocess.run([str(target / "bin" / script), *argv, "--print-config"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "[" in done.stdout, f"{script}: {done.stderr[-2000:]}"
    check = ("import jobs, training.taxonomy as t; from jobs._cli import CONF_DIR; "
             "print(jobs.__file__, CONF_DIR, t.load_taxonomy('core6').name)")
    done = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    module, conf, taxonomy = done.stdout.split()
    assert module.startswith(str(target)) and conf == str(target / "ser_udfs" / "conf") and taxonomy == "core6"
