"""Extraction and scoring on a real Spark standalone cluster, submitted the way the README says.

``scripts/cluster.sh start`` runs one master and two workers (1 core, 1 GB each) on 127.0.0.1
from the installed PySpark; the project's packages travel as a ``--py-files`` zip (what
``make package`` builds); the jobs' tables must equal those of local mode. The cluster is stopped
whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jobs import extract_features, score_calls
from ser_udfs.synthetic.speech import synth_utterance
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from tests.torture import extraction_tables
from tests.builders import STEREO_TURNS, assert_tables_equal, call_bundle

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def _free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The master URL and the cluster's folder (pids, logs, worker folders)."""
    state = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ, "CLUSTER_DIR": str(state), "CLUSTER_HOST": "127.0.0.1",
        "CLUSTER_PORT": str(_free_port(7077)), "CLUSTER_WEBUI_PORT": str(_free_port()),
        "CLUSTER_WORKER_WEBUI_PORT": "0", "CLUSTER_WORKERS": "2", "CLUSTER_WORKER_CORES": "1",
        "CLUSTER_WORKER_MEMORY": "1g", "PYTHON": sys.executable,
    }
    script = REPO / "scripts" / "cluster.sh"
    try:
        started = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=240)
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(state.glob("*.log")))
        assert started.returncode == 0, started.stderr + logs
        yield started.stdout.split()[-1], state
    finally:
        subprocess.run([str(script), "stop"], env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The archive ``make package`` builds: ser_udfs, training and jobs, without __pycache__."""
    archive = tmp_path_factory.mktemp("dist") / "ser_spark.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for folder in ("ser_udfs", "training", "jobs"):
            for path in sorted((REPO / folder).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    bundle.write(path, path.relative_to(REPO).as_posix())
    return archive


def _submit(master: str, package: Path, job: str, args: list[str], log: Path) -> None:
    env = {
        **os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("SER_SPARK_MASTER", None)
    command = [
        str(SPARK_SUBMIT), "--master", master, "--py-files", str(package),
        "--driver-java-options", "-Dlog4j.configurationFile=conf/log4j2.properties",
        f"jobs/{job}.py", *args, "--log-level", "WARNING",
    ]
    with log.open("wb") as sink:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=480)
    assert status.returncode == 0, log.read_text()[-4000:]


def _shipped_archives(state: Path) -> list[Path]:
    return sorted(state.glob("worker-*/app-*/*/ser_spark.zip"))


def test_extraction_on_the_cluster_equals_local_mode(spark, cluster, package: Path, tmp_path: Path) -> None:
    master, state = cluster
    corpus = tmp_path / "corpus"
    for actor in (1, 2):
        for code, emotion in (("05", "angry"), ("04", "sad")):
            folder = corpus / f"Actor {actor:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            wave = synth_utterance(emotion, speaker_seed=actor, utterance_seed=int(code), duration_s=1.0, sample_rate=22050)
            sf.write(folder / f"03-01-{code}-01-01-01-{actor:02d}.wav", wave, 22050)
    (corpus / "empty.wav").write_bytes(b"")
    sf.write(corpus / "silence é.flac", np.zeros(16000, np.float32), 16000)

    args = ["--input", str(corpus), "--set", "mel.n_mels=32"]
    _submit(master, package, "extract_features", [*args, "--output", str(tmp_path / "cluster")], tmp_path / "job.log")
    assert extract_features.main([*args, "--output", str(tmp_path / "local"), "--log-level", "WARNING"]) == 0

    on_cluster = json.loads((tmp_path / "cluster" / "_manifest.json").read_text())
    assert on_cluster["spark"]["master"] == master
    assert on_cluster["counts"] == json.loads((tmp_path / "local" / "_manifest.json").read_text())["counts"]
    assert on_cluster["counts"]["files_listed"] == 6 and on_cluster["counts"]["errors"] == 2
    for cluster_table, local_table in zip(extraction_tables(tmp_path / "cluster"), extraction_tables(tmp_path / "local")):
        assert_tables_equal(cluster_table, local_table)
    assert _shipped_archives(state), "the executors did not receive the --py-files archive"


def _score_tables(output: Path) -> dict[str, pd.DataFrame]:
    keys = {"segments": ["call_id", "channel", "start_s"], "turns": ["call_id", "channel", "turn"], "calls": ["call_id"],
            "errors": ["path"]}
    return {
        name: pd.read_parquet(output / name).sort_values(key).reset_index(drop=True) for name, key in keys.items()
    }


def test_scoring_on_the_cluster_equals_local_mode(spark, cluster, package: Path, tmp_path: Path) -> None:
    master, _ = cluster
    bundle = call_bundle(tmp_path / "bundle")
    calls = tmp_path / "calls"
    write_call(calls / "stereo call.wav", synth_call(STEREO_TURNS, duration_s=18.0, seed=1), 8000, encoding="ulaw")
    write_call(calls / "2026" / "mono.flac", synth_call([Turn(0, 1.0, 4.0, "angry")], duration_s=6.0, channels=1, seed=2), 8000, encoding="flac")
    (calls / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")

    args = ["--input", str(calls), "--model", str(bundle)]
    _submit(master, package, "score_calls", [*args, "--output", str(tmp_path / "cluster")], tmp_path / "job.log")
    assert score_calls.main([*args, "--output", str(tmp_path / "local"), "--log-level", "WARNING"]) == 0

    on_cluster = json.loads((tmp_path / "cluster" / "_manifest.json").read_text())
    assert on_cluster["spark"]["master"] == master
    assert on_cluster["counts"] == json.loads((tmp_path / "local" / "_manifest.json").read_text())["counts"]
    assert (on_cluster["counts"]["calls_listed"], on_cluster["counts"]["errors"]) == (3, 1)
    cluster_tables, local_tables = _score_tables(tmp_path / "cluster"), _score_tables(tmp_path / "local")
    for name in ("segments", "turns", "calls", "errors"):
        assert_tables_equal(cluster_tables[name], local_tables[name], obj=name)
