"""The extraction job on the torture corpus: it finishes, sorts every entry, and counts reconcile."""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

from jobs import extract_features
from jobs._cli import run
from ser_udfs.errors import UserError
from ser_udfs.spark.io import list_files
from ser_udfs.spark.listing import uri_for_local_path, walk_local
from ser_udfs.spark.path_checks import check_manifest_paths, check_output_apart
from tests import torture
from tests.builders import assert_tables_equal

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def torture_root(tmp_path_factory) -> Iterator[Path]:
    # the root's name holds glob characters: an existing folder must be listed as it is
    root = torture.build_corpus(tmp_path_factory.mktemp("torture") / "corpus [2024]")
    yield root
    torture.unlock(root)


def _extract(root: Path, output: Path, *overrides: str) -> None:
    argv = ["--input", str(root), "--output", str(output), "--log-level", "WARNING", "--set", "mel.n_mels=32"]
    for override in overrides:
        argv += ["--set", override]
    with pytest.MonkeyPatch.context() as patch:
        if torture.locked_is_readable(root):  # running as root: refuse the folder as the kernel would
            patch.setattr(os, "scandir", torture.deny_listing(root / torture.LOCKED_DIR))
        assert extract_features.main(argv) == 0


@pytest.fixture(scope="module")
def extracted(spark, torture_root: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("torture-out") / "table"
    _extract(torture_root, output)
    return output


def _outcomes(output: Path, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    features = pd.read_parquet(output / "features")
    errors = pd.read_parquet(output / "errors")
    names = [torture.relative_name(p, root) for p in features["path"]] + [
        torture.relative_name(p, root) for p in errors["path"]
    ]
    assert len(names) == len(set(names)), f"entries listed twice: {sorted(n for n in names if names.count(n) > 1)}"
    outcomes = {torture.relative_name(p, root): "features" for p in features["path"]}
    outcomes.update((torture.relative_name(p, root), k) for p, k in zip(errors["path"], errors["error_kind"]))
    return features, errors, outcomes


def test_every_entry_gets_exactly_its_expected_outcome(extracted: Path, torture_root: Path) -> None:
    _, _, outcomes = _outcomes(extracted, torture_root)
    assert outcomes == torture.expected_outcomes(torture.present_cases(torture_root))


def test_error_messages_are_one_clear_sentence(extracted: Path, torture_root: Path) -> None:
    errors = pd.read_parquet(extracted / "errors")
    messages = {torture.relative_name(p, torture_root): m for p, m in zip(errors["path"], errors["error_message"])}
    for case in torture.present_cases(torture_root):
        if case.expect in ("features", "ignored"):
            continue
        message = messages[case.path]
        assert case.message in message, (case.path, message)
        assert "\n" not in message and len(message) < 300, message
        assert "object at 0x" not in message and "Traceback" not in message, message


def test_counts_reconcile_and_the_output_is_committed(extracted: Path, torture_root: Path) -> None:
    manifest = json.loads((extracted / "_manifest.json").read_text())
    counts = manifest["counts"]
    expected = torture.expected_outcomes(torture.present_cases(torture_root))
    assert counts["files_listed"] == len(expected)
    assert counts["clips"] == counts["feature_rows"] == sum(v == "features" for v in expected.values())
    assert counts["errors"] == sum(v != "features" for v in expected.values())
    assert counts["clips"] + counts["errors"] == counts["files_listed"]
    assert (extracted / "_SUCCESS").exists()
    assert not [p.name for p in extracted.iterdir() if p.name.startswith("_staging")]


def test_features_are_finite_and_describe_odd_inputs(extracted: Path, torture_root: Path) -> None:
    features, _, _ = _outcomes(extracted, torture_root)
    for column in ("log_mel", "mfcc", "zcr", "stats"):
        assert all(np.isfinite(np.asarray(values)).all() for values in features[column]), column
    by_name = {torture.relative_name(p, torture_root): row for p, row in zip(features["path"], features.itertuples())}
    assert by_name["odd/eight_channels.wav"].source_channels == 8
    assert by_name["odd/rate_192k.wav"].source_sample_rate == 192000
    assert by_name["odd/truncated.wav"].source_duration_s == pytest.approx(0.5)
    assert by_name["odd/interview take 3.wav"].corpus == "unknown"
    ravdess = by_name["odd/03-01-05-01-01-01-01.wav"]
    assert (ravdess.corpus, ravdess.speaker, ravdess.label) == ("ravdess", "01", "angry")
    assert features["clip_id"].is_unique


def test_spark_read_mode_gives_the_same_tables(extracted: Path, torture_root: Path, tmp_path: Path) -> None:
    """Spark reading the bytes (as for hdfs:// or s3a:// inputs) must see every file the same way."""
    _extract(torture_root, tmp_path / "spark-read", "read.mode=spark")
    manifest = json.loads((tmp_path / "spark-read" / "_manifest.json").read_text())
    assert manifest["read_mode"] == "spark"
    for table, key in (("features", "clip_id"), ("errors", "path")):
        python_read = pd.read_parquet(extracted / table).sort_values(key).reset_index(drop=True)
        spark_read = pd.read_parquet(tmp_path / "spark-read" / table).sort_values(key).reset_index(drop=True)
        assert_tables_equal(python_read, spark_read)


def test_local_listing_spells_paths_like_spark_and_lists_each_file_once(spark, torture_root: Path) -> None:
    listing = walk_local([str(torture_root / "odd")])
    escaped = re.sub(r"([\\{}\[\]*?])", r"\\\1", str(torture_root / "odd"))  # Spark takes [2024] for a glob
    spark_index = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(escaped)
    assert listing.files == sorted("file:/" + uri[len("file:///"):] for uri in spark_index.inputFiles())
    assert not listing.problems
    assert uri_for_local_path("/data/a b/é#[1]%.wav") == "file:/data/a%20b/é%23%5B1%5D%25.wav"


def test_local_listing_follows_globs_and_refuses_missing_inputs(torture_root: Path) -> None:
    listing = walk_local([glob.escape(str(torture_root / "odd")) + "/*.wav"])  # in a pattern, [2024] needs escaping
    assert [torture.relative_name(uri, torture_root) for uri in listing.files] == sorted(
        case.path for case in torture.present_cases(torture_root) if case.path.startswith("odd/") and case.path.count("/") == 1
        and case.path.endswith(".wav") and case.expect != "ignored"
    )
    with pytest.raises(UserError, match="cannot read input"):
        walk_local([str(torture_root / "nowhere")])
    with pytest.raises(UserError, match="cannot read input"):
        walk_local([glob.escape(str(torture_root / "odd")) + "/*.nothing"])


def test_report_tables_are_current() -> None:
    text = torture.DOC_PATH.read_text(encoding="utf-8")
    assert torture.render_doc(text) == text, "docs/RELIABILITY.md is out of date: run python -m tests.torture --write-doc"
    for case in torture.FAULT_CASES:
        module, _, function = case.test.partition("::")
        source = (torture.DOC_PATH.parents[1] / module).read_text(encoding="utf-8")
        assert not function or f"def {function}(" in source, f"{case.test} does not exist"


def test_existing_local_paths_with_glob_characters_are_never_taken_for_globs(tmp_path: Path) -> None:
    folder = tmp_path / "calls [2024]"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"x")
    (tmp_path / "calls 2").mkdir()  # what the pattern "calls [2024]" would match
    (tmp_path / "calls 2" / "wrong.wav").write_bytes(b"x")
    listing = walk_local([str(folder)])
    assert listing.files == [uri_for_local_path(str(folder / "a.wav"))]
    with pytest.raises(UserError, match="holds the input"):
        check_output_apart(str(folder), [str(folder)])
    with pytest.raises(UserError, match="holds the input"):
        check_output_apart(str(tmp_path / "calls [2024]"), [str(folder / "a.wav")])


def _clip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torture._pcm_wav(path, torture._speech())
    return path


def test_a_manifest_listing_one_file_five_ways_is_refused_in_one_sentence(spark, tmp_path: Path, capsys) -> None:
    clip = _clip(tmp_path / "corpus" / "clips" / "a.wav")
    manifest = tmp_path / "corpus" / "labels.csv"
    manifest.write_text(
        f"path,label\nclips/a.wav,happy\nclips/a.wav,happy\n{clip},angry\nfile://{clip},sad\n"
        "./clips/../clips/a.wav,fear\n"
    )
    output = tmp_path / "out"
    assert run(extract_features.main, ["--manifest", str(manifest), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"manifest lines 2, 3, 4, 5 and 6 all list {clip}, with different labels" in error, error
    assert len(error.splitlines()) == 1


def test_manifest_roots_restrict_where_manifest_paths_may_point(spark, tmp_path: Path, capsys) -> None:
    inside = _clip(tmp_path / "corpus" / "a.wav")
    outside = _clip(tmp_path / "elsewhere" / "b.wav")
    (tmp_path / "corpus" / "escape.wav").symlink_to(outside)
    check_manifest_paths([str(inside), "file:" + str(inside)], manifest="/m.csv", roots=[str(tmp_path / "corpus")])
    check_manifest_paths([str(outside)], manifest="/m.csv", roots=[])  # empty: no restriction
    for path in (outside, tmp_path / "corpus" / ".." / "elsewhere" / "b.wav", tmp_path / "corpus" / "escape.wav"):
        with pytest.raises(UserError, match=r"row 2: .* lies outside read.manifest_roots"):
            check_manifest_paths([str(inside), str(path)], manifest="/m.csv", roots=[str(tmp_path / "corpus")])
    with pytest.raises(UserError, match="lies outside read.manifest_roots"):
        check_manifest_paths(["hdfs://nn/data/../etc/x.wav"], manifest="hdfs://nn/m.csv", roots=["hdfs://nn/data"])
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\n{inside},happy\n{outside},sad\n")
    argv = ["--manifest", str(manifest), "--output", str(tmp_path / "out"),
            "--set", f'read.manifest_roots=["{tmp_path / "corpus"}"]']
    assert run(extract_features.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert f"{outside} lies outside read.manifest_roots" in error and len(error.splitlines()) == 1, error



def test_local_brace_patterns_are_walked_and_names_hadoop_cannot_address_left_to_python(spark, tmp_path: Path) -> None:
    """``{a,b}`` patterns (Hadoop's glob syntax) on local inputs are expanded and walked like any
    local input, so that a name holding ':' never reaches Hadoop, which cannot open it."""
    good = _clip(tmp_path / "calls" / "b" / "fine.wav")
    try:
        colon = _clip(tmp_path / "calls" / "a" / "10:30.wav")
    except OSError:
        pytest.skip("this file system refuses ':' in names")
    _clip(tmp_path / "calls" / "c" / "not this.wav")
    listed = list_files(spark, [str(tmp_path / "calls" / "{a,b}")], with_content=True).collect()
    content = {row.path: row.content for row in listed}
    assert sorted(content) == sorted([uri_for_local_path(str(colon)), uri_for_local_path(str(good))])
    assert content[uri_for_local_path(str(colon))] is None  # the workers open it by its local path
    assert content[uri_for_local_path(str(good))] == good.read_bytes()
    assert walk_local([str(tmp_path / "calls" / "{a,c}" / "*.wav")]).files == sorted(
        [uri_for_local_path(str(colon)), uri_for_local_path(str(tmp_path / "calls" / "c" / "not this.wav"))]
    )
