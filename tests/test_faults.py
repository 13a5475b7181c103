"""Injected faults: failing tasks, a job killed while it writes, reruns, damaged bundles, hostile paths."""

from __future__ import annotations

import ast
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from jobs import extract_features
from jobs._cli import run
from ser_udfs.errors import UserError
from ser_udfs.spark.faults import DELAY_ENV, FAIL_ONCE_ENV
from ser_udfs.spark.path_checks import check_manifest_paths, check_output_apart
from tests.torture import extraction_tables
from tests.builders import assert_tables_equal, extraction_args, random_logreg_bundle, start_extraction_job, write_small_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight RAVDESS-named clips of two actors and two bad files: ten listed files."""
    return write_small_corpus(tmp_path_factory.mktemp("faults-corpus"))



def _assert_same_tables(output: Path, reference: Path) -> None:
    for got, expected in zip(extraction_tables(output), extraction_tables(reference)):
        assert_tables_equal(got, expected)


@pytest.fixture(scope="module")
def clean_run(spark, corpus: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("clean") / "table"
    assert extract_features.main(extraction_args(corpus, output, "read.files_per_partition=2")) == 0
    return output



@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.parametrize("writer", ["python", "spark"])
def test_task_failing_once_per_partition_is_retried_without_duplicates(
    writer: str, corpus: Path, clean_run: Path, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    output = tmp_path / "table"
    job = start_extraction_job(
        corpus, output, tmp_path / "job.log", {FAIL_ONCE_ENV: str(markers)},
        "read.files_per_partition=2", "output.rows_per_batch=1", f"output.writer={writer}", master="local[2,4]",
    )
    assert job.wait(timeout=300) == 0, (tmp_path / "job.log").read_text()[-3000:]
    manifest = json.loads((output / "_manifest.json").read_text())
    failed = sorted(marker.name for marker in markers.iterdir())
    assert len(failed) == manifest["spark"]["partitions"] >= 5, failed  # every partition failed once
    assert manifest["counts"]["clips"] + manifest["counts"]["errors"] == manifest["counts"]["files_listed"] == 10
    _assert_same_tables(output, clean_run)


@pytest.mark.spark
@pytest.mark.slow
def test_job_killed_mid_write_is_never_taken_for_finished_and_rerun_completes(
    spark, corpus: Path, clean_run: Path, tmp_path: Path
) -> None:
    from ser_udfs.spark.feature_table import read_feature_table
    from ser_udfs.spark.io import read_manifest_json

    output = tmp_path / "table"  # a new output; a finished one killed while rerun stays finished (test_reliability_outputs)
    job = start_extraction_job(
        corpus, output, tmp_path / "job.log", {DELAY_ENV: "1.0"},
        "read.files_per_partition=2", "output.rows_per_batch=1", master="local[2,4]",
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and job.poll() is None:
            staged = [p for p in output.glob("_staging-*/**/*") if p.is_file()]
            if staged:
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before it could be killed:\n" + (tmp_path / "job.log").read_text()[-3000:]
        assert staged, "the job wrote nothing to its staging folder in time"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)

    assert not (output / "_SUCCESS").exists() and not (output / "_manifest.json").exists()
    assert list(output.glob("_staging-*")), "the killed run should leave its staging folder behind"
    with pytest.raises(UserError, match="is not a finished output"):
        read_manifest_json(spark, str(output))
    with pytest.raises(UserError, match="is not a finished output"):
        read_feature_table(spark, str(output), feature_columns=["stats"])

    assert extract_features.main(extraction_args(corpus, output)) == 0
    assert not list(output.glob("_staging-*"))
    assert read_manifest_json(spark, str(output))["counts"]["files_listed"] == 10
    _assert_same_tables(output, clean_run)


@pytest.mark.spark
def test_reruns_are_idempotent_whatever_the_partitioning(
    spark, corpus: Path, clean_run: Path, tmp_path: Path
) -> None:
    assert extract_features.main(extraction_args(corpus, tmp_path / "again", "read.files_per_partition=64")) == 0
    _assert_same_tables(tmp_path / "again", clean_run)
    first = json.loads((clean_run / "_manifest.json").read_text())
    second = json.loads((tmp_path / "again" / "_manifest.json").read_text())
    assert first["counts"] == second["counts"]
    assert first["feature_config_version"] == second["feature_config_version"]


@pytest.mark.spark
def test_job_writes_only_inside_its_output(spark, corpus: Path, tmp_path: Path) -> None:
    def snapshot(root: Path) -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}

    before_input, before_parent = snapshot(corpus), snapshot(tmp_path)
    assert extract_features.main(extraction_args(corpus, tmp_path / "out")) == 0
    assert snapshot(corpus) == before_input
    after_parent = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(tmp_path / "out"))}
    assert after_parent == before_parent


def _copy(bundle: Path, destination: Path) -> Path:
    destination.mkdir()
    for item in bundle.iterdir():
        (destination / item.name).write_bytes(item.read_bytes())
    return destination


def test_damaged_bundles_are_refused(tmp_path: Path, monkeypatch) -> None:
    import pickle

    import torch
    from safetensors.numpy import load_file, save_file

    from training.bundle.format import CONFIG_FILE, WEIGHTS_FILE
    from training.bundle.load import load_bundle

    good = random_logreg_bundle(tmp_path / "good")

    def forbidden(*args, **kwargs):
        raise AssertionError("a bundle was loaded with pickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    (good / "model.pkl").write_bytes(pickle.dumps({"planted": True}))  # beside the weights: never read
    assert load_bundle(good).labels == ("angry", "sad")

    cases = {}
    cases["interrupted: no config.json"] = (lambda b: (b / CONFIG_FILE).unlink(), "incomplete: config.json missing")
    cases["weights deleted"] = (lambda b: (b / WEIGHTS_FILE).unlink(), "incomplete: model.safetensors missing")
    cases["weights truncated"] = (
        lambda b: (b / WEIGHTS_FILE).write_bytes((b / WEIGHTS_FILE).read_bytes()[:50]), "cannot read model.safetensors"
    )

    def edit_feature_config(bundle: Path) -> None:
        config = json.loads((bundle / CONFIG_FILE).read_text())
        config["feature_config"]["mel"]["n_mels"] = 40
        (bundle / CONFIG_FILE).write_text(json.dumps(config))

    cases["feature config edited"] = (edit_feature_config, "was edited")

    def change_weights(bundle: Path) -> None:
        tensors = load_file(bundle / WEIGHTS_FILE)
        tensors["coef"] = tensors["coef"] * 2
        save_file(tensors, bundle / WEIGHTS_FILE)

    cases["weights changed, same shapes"] = (change_weights, "do not match the checksums")
    cases["extra weights planted"] = (
        lambda b: save_file({"x": np.zeros(2, np.float32)}, b / "extra.safetensors"), "do not match the checksums"
    )
    cases["config.json not JSON"] = (lambda b: (b / CONFIG_FILE).write_text("{not json"), "cannot read")
    for index, (what, (damage, message)) in enumerate(cases.items()):
        bundle = _copy(good, tmp_path / f"damaged-{index}")
        damage(bundle)
        with pytest.raises(UserError, match=message) as refused:
            load_bundle(bundle)
        assert str(bundle) in str(refused.value) and "\n" not in str(refused.value), what
    with pytest.raises(UserError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_no_code_path_unpickles() -> None:
    """Project code never imports pickle, and calls torch.load / numpy.load only without pickle."""
    offences = []
    for folder in ("ser_udfs", "training", "jobs", "bench"):
        for source in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(source.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                    if any(name.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib") for name in names):
                        offences.append(f"{source.relative_to(REPO)}:{node.lineno} imports a pickle module")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    keywords = {k.arg: k.value for k in node.keywords}
                    if node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch":
                        if not (isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value):
                            offences.append(f"{source.relative_to(REPO)}:{node.lineno} torch.load without weights_only=True")
                    pickle_flag = keywords.get("allow_pickle")
                    if isinstance(pickle_flag, ast.Constant) and pickle_flag.value is True:
                        offences.append(f"{source.relative_to(REPO)}:{node.lineno} allow_pickle=True")
    assert not offences, offences


def test_manifest_schemes_and_outputs_are_checked(spark, corpus: Path, tmp_path: Path, capsys) -> None:
    check_manifest_paths(["/data/a.wav", "file:/data/b.wav"], manifest="/data/m.csv")
    check_manifest_paths(["hdfs://nn/a.wav"], manifest="hdfs://nn/m.csv")
    check_manifest_paths(["s3a://bucket/a.wav"], manifest="/data/m.csv", extra_schemes=["S3A"])
    for path in ("http://example.com/a.wav", "hdfs://nn/a.wav", "ftp://host/a.wav"):
        with pytest.raises(UserError, match="read.manifest_schemes"):
            check_manifest_paths(["/data/ok.wav", path], manifest="/data/m.csv")

    check_output_apart(str(tmp_path / "out"), [str(corpus)])
    check_output_apart(str(corpus / "features-out"), [str(corpus)])  # an output inside an input is harmless
    for output, given in ((corpus, str(corpus)), (corpus.parent, str(corpus)), (corpus.parent, f"{corpus}/*/*.wav"),
                          (corpus, "file:" + str(corpus / "Actor_01"))):
        with pytest.raises(UserError, match="holds the input"):
            check_output_apart(str(output), [given])
    check_output_apart("hdfs://nn/out", ["hdfs://nn/data", "/data"])
    with pytest.raises(UserError, match="holds the input"):
        check_output_apart("hdfs://nn/data/", ["hdfs://nn/data/calls/../x"])

    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\n{corpus}/Actor_01/03-01-05-01-01-01-01.wav,angry\nhttp://example.com/x.wav,sad\n")
    assert run(extract_features.main, ["--manifest", str(manifest), "--output", str(tmp_path / "m")]) == 2
    assert "http://example.com/x.wav is on 'http:'" in capsys.readouterr().err
    assert run(extract_features.main, ["--input", str(corpus / "Actor_01"), "--output", str(corpus)]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert not (corpus / "_staging").exists() and not list(corpus.glob("_*"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--augment", "-1"], "must be 0 or more"),
        (["--set", "read.files_per_partition=0"], "must be at least 1"),
        (["--set", "output.rows_per_batch=0"], "must be at least 1"),
        (["--set", "read.mode=bogus"], "read.mode must be one of"),
        (["--set", "nosuch.key=1"], "no section 'nosuch'"),
    ],
)
def test_bad_arguments_are_refused_in_one_sentence(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    status = run(extract_features.main, ["--input", str(tmp_path), "--output", str(tmp_path / "o"), *flags])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "o").exists()
