"""The scoring job end to end in local-mode Spark, and its worker-side pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from jobs._cli import run
from jobs.score_calls import main
from ser_udfs.spark import model_cache
from ser_udfs.spark import score as spark_score
from ser_udfs.calls.config import CallScoringConfig
from ser_udfs.calls.tables import TABLES, call_rows
from ser_udfs.features.extract_file import clip_id_for
from ser_udfs.spark.listing import local_uri
from ser_udfs.spark.score import make_score_fn, output_ddl
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from tests.builders import CALL_LABELS, STEREO_TURNS, adaptive_call_bundles, call_bundle, two_speaker_call
from training.bundle.load import load_bundle
from training.inference import CallModel, ScoringModelFactory, model_id


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return call_bundle(tmp_path_factory.mktemp("bundle") / "tiny-logreg")


@pytest.fixture(scope="module")
def calls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stereo µ-law call, a mono 16-bit call in a subfolder, a silent call, a short call, a bad file."""
    root = tmp_path_factory.mktemp("calls")
    write_call(root / "stereo.wav", synth_call(STEREO_TURNS, duration_s=18.0, seed=1), 8000, encoding="ulaw")
    mono = synth_call([Turn(0, 1.0, 4.0, "angry")], duration_s=6.0, channels=1, seed=2)
    write_call(root / "2026" / "mono.wav", mono, 8000)
    write_call(root / "silent.wav", np.zeros((2, 8000 * 5), dtype=np.float32), 8000, encoding="alaw")
    short = synth_call([Turn(1, 0.2, 1.6, "sad")], duration_s=1.8, channels=2, seed=3)
    write_call(root / "short.flac", short, 8000, encoding="flac")
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "notes.txt").write_text("not audio, not listed\n")
    return root


N_CALLS = 5


@pytest.mark.spark
@pytest.mark.slow
def test_job_scores_every_channel_and_reports_bad_files(spark, bundle_dir: Path, calls_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "scores"
    status = run(main, [
        "--input", str(calls_dir), "--model", str(bundle_dir), "--output", str(output),
        "--plot", "stereo.wav", "--set", "read.files_per_partition=1",
    ])
    assert status == 0
    assert (output / "_SUCCESS").exists()
    manifest = json.loads((output / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["calls_listed"] == N_CALLS
    assert (counts["calls_scored"], counts["errors"], counts["calls_without_speech"]) == (4, 1, 1)
    assert manifest["model"]["model_id"] == model_id(load_bundle(bundle_dir))
    assert manifest["config"]["channels"]["select"] == "all"
    # one load per Python worker (local[2]: at most 2), not one per task (5 partitions)
    assert 1 <= manifest["model_loads"] <= 2 < manifest["spark"]["partitions"]

    calls = pd.read_parquet(output / "calls").set_index("path")
    segments = pd.read_parquet(output / "segments")
    errors = pd.read_parquet(output / "errors")
    stereo_uri = local_uri(str(calls_dir / "stereo.wav"))
    assert errors["path"].tolist() == [local_uri(str(calls_dir / "broken.wav"))]
    assert errors["error_kind"].tolist() == ["decode"]
    stereo = calls.loc[stereo_uri]
    assert stereo["call_id"] == clip_id_for(stereo_uri)
    assert list(stereo["scored_channels"]) == [0, 1]
    assert (stereo["channels"], stereo["sample_rate"], stereo["encoding"]) == (2, 8000, "ULAW")
    assert stereo["duration_s"] == pytest.approx(18.0)
    assert stereo["status"] == "ok" and stereo["dominant_emotion"] in CALL_LABELS
    assert stereo["uncertain_s"] == 0.0  # summary.min_confidence is off by default
    assert calls.loc[local_uri(str(calls_dir / "silent.wav")), "status"] == "no_speech"
    assert list(segments.columns) == [
        "call_id", "path", "channel", "role", "start_s", "end_s", "start_ms", "end_ms", "speech", "turn", "label",
        "confidence", "prob_angry", "prob_sad", "model_id",
    ]
    np.testing.assert_array_equal(segments["start_ms"], (segments["start_s"] * 1000).round().astype("int64"))
    own = segments[segments["path"] == stereo_uri]
    for channel, expected in ((0, "angry"), (1, "sad")):
        timeline = own[own["channel"] == channel].sort_values("start_s")
        assert timeline["start_s"].iloc[0] == 0.0 and timeline["end_s"].iloc[-1] == pytest.approx(18.0)
        labelled = timeline.dropna(subset=["label"])
        durations = (labelled["end_s"] - labelled["start_s"]).groupby(labelled["label"]).sum()
        assert durations.idxmax() == expected
        np.testing.assert_allclose(labelled[["prob_angry", "prob_sad"]].sum(axis=1), 1.0, atol=1e-5)
    turns = pd.read_parquet(output / "turns")
    assert counts["turns"] == len(turns)
    own_turns = turns[turns["path"] == stereo_uri]
    assert sorted(own_turns["role"].unique()) == ["agent", "customer"]
    assert (own_turns[own_turns["channel"] == 1]["role"] == "customer").all()
    # one row per speech turn of the timeline, with the segments' span and the windows' label
    speech = own[own["speech"]]
    assert len(own_turns) == speech.groupby(["channel", "turn"]).ngroups
    for row in own_turns.itertuples():
        pieces = speech[(speech["channel"] == row.channel) & (speech["turn"] == row.turn)]
        assert (pieces["start_s"].min(), pieces["end_s"].max()) == pytest.approx((row.start_s, row.end_s))
        assert row.duration_s == pytest.approx(row.end_s - row.start_s) and row.overlap_s == 0.0
        assert not row.overlaps and not row.interruption
    channels = pd.read_parquet(output / "channels")
    assert counts["channels"] == len(channels) == 2 + 1 + 2 + 2  # stereo, mono, silent and short stereo
    own_channels = channels[channels["path"] == stereo_uri].set_index("channel")
    assert own_channels["turn_count"].to_dict() == own_turns.groupby("channel").size().to_dict()
    assert own_channels["role"].to_dict() == {0: "agent", 1: "customer"}
    assert own_channels["talk_share"].sum() == pytest.approx(1.0)
    assert own_channels["windows"].sum() == stereo["windows_scored"]
    assert own_channels.loc[0, "dominant_emotion"] == "angry" and own_channels.loc[1, "dominant_emotion"] == "sad"
    assert stereo["overlap_s"] == 0.0 and 0.0 < stereo["silence_s"] < 18.0
    assert stereo["talk_s"] + stereo["silence_s"] == pytest.approx(18.0, abs=0.01)
    assert stereo["interruptions"] == 0 and stereo["median_reply_gap_s"] > 0
    assert 0.0 <= stereo["escalation_score"] <= 1.0 and pd.isna(stereo["analytics_note"])
    mono_row = calls.loc[local_uri(str(calls_dir / "2026" / "mono.wav"))]
    assert pd.isna(mono_row["overlap_s"]) and pd.isna(mono_row["interruptions"]) and "mono" in mono_row["analytics_note"]
    assert (turns[turns["path"].str.endswith("mono.wav")]["role"] == "unknown").all()
    assert turns[turns["path"].str.endswith("mono.wav")]["overlap_s"].isna().all()
    plot = output / "plots" / f"{clip_id_for(stereo_uri)}-stereo.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the run report reads what the job wrote
    from jobs.report_calls import main as report_main

    assert run(report_main, ["--scores", str(output), "--output", str(tmp_path / "report"), "--top", "3"]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Calls to review" in page and clip_id_for(stereo_uri) in page
    assert (tmp_path / "report" / "images" / f"{clip_id_for(stereo_uri)}-stereo.png").exists()


@pytest.mark.spark
@pytest.mark.slow
def test_customer_channel_only_and_csv(spark, bundle_dir: Path, calls_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "customer"
    status = run(main, [
        "--input", str(calls_dir), "--model", str(bundle_dir), "--output", str(output),
        "--channels", "customer", "--format", "csv",
    ])
    assert status == 0
    segments = pd.concat(pd.read_csv(part) for part in sorted((output / "segments").glob("part-*.csv")))
    assert set(segments["channel"].astype(str)) == {"1"}
    errors = pd.concat(pd.read_csv(part) for part in sorted((output / "errors").glob("part-*.csv")))
    by_path = dict(zip(errors["path"], errors["error_kind"]))
    assert by_path[local_uri(str(calls_dir / "2026" / "mono.wav"))] == "unsupported"  # no customer channel
    calls = pd.concat(pd.read_csv(part) for part in sorted((output / "calls").glob("part-*.csv")))
    assert len(calls) + len(errors) == N_CALLS
    assert json.loads(calls["scored_channels"].iloc[0]) == [1]


def test_a_window_the_model_cannot_take_is_refused_before_spark_starts(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    status = run(main, [
        "--input", str(tmp_path), "--model", str(bundle_dir), "--output", str(tmp_path / "out"), "--window-s", "2.0",
    ])
    assert status == 2
    assert "does not match the model's 3.0 s training clips" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_logreg_that_standardises_stats_per_speaker_is_refused(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    from training.bundle.load import save_bundle

    tiny = load_bundle(bundle_dir)
    per_speaker = save_bundle(
        tmp_path / "per-speaker", model=tiny.model, taxonomy=tiny.taxonomy, labels=tiny.labels,
        feature_config=tiny.feature_config, training={"note": "tests"}, metrics={}, stats_normalisation="speaker",
    )
    status = run(main, ["--input", str(tmp_path), "--model", str(per_speaker), "--output", str(tmp_path / "out")])
    assert status == 2
    assert "nothing to fall back to on a channel with little speech" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.spark
def test_an_adaptive_bundle_adapts_to_each_channel_and_says_so(spark, tmp_path: Path) -> None:
    adaptive, _ = adaptive_call_bundles(tmp_path / "bundles")
    calls = tmp_path / "calls"
    write_call(calls / "two-speakers.wav", two_speaker_call(), 8000, encoding="ulaw")
    write_call(calls / "one-speaker.wav", two_speaker_call()[:1, : 8000 * 8], 8000)
    output = tmp_path / "scores"
    status = run(main, ["--input", str(calls), "--model", str(adaptive), "--output", str(output),
                        "--set", "adaptation.min_windows=4"])
    assert status == 0
    rows = {row["call_id"]: row for row in pd.read_parquet(output / "calls").to_dict("records")}
    two = rows[clip_id_for(local_uri(str(calls / "two-speakers.wav")))]
    channels = pd.read_parquet(output / "channels")
    both = channels[channels["call_id"] == two["call_id"]].set_index("channel")
    assert both["adaptation"].to_dict() == {0: "speaker", 1: "speaker"}
    assert (both["windows"] >= 4).all() and both["windows"].sum() == two["windows_scored"]
    one = channels[channels["path"].str.endswith("one-speaker.wav")]
    assert one["adaptation"].tolist() == ["none"]  # 8 s: too few windows, the CNN alone
    segments = pd.read_parquet(output / "segments")
    speech = segments[segments["speech"]]
    assert speech["turn"].notna().all() and segments[~segments["speech"]]["turn"].isna().all()
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["model"]["adapts_to_speaker"] is True
    assert manifest["config"]["adaptation"] == {"mode": "speaker", "min_windows": 4}


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int) -> None:
        self.value += amount


class _Broadcast:
    def __init__(self, value) -> None:
        self.value = value


def test_the_model_is_loaded_once_per_worker_process(spark, bundle_dir: Path, calls_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    loads = _Counter()
    schema = to_arrow_schema(StructType.fromDDL(output_ddl(CALL_LABELS)))  # fromDDL needs a session
    factory = ScoringModelFactory(files=_Broadcast(bundle.files), source=str(bundle_dir), torch_threads=0)
    model_cache.clear()
    score = make_score_fn(
        model_id=model_id(bundle), make_predictor=factory, config=CallScoringConfig(),
        channels="all", read_mode="auto", output_schema=schema, model_loads=loads,
    )
    paths = [local_uri(str(calls_dir / name)) for name in ("stereo.wav", "silent.wav", "broken.wav")]
    try:
        for path in paths:  # three tasks in the same process
            batch = pa.RecordBatch.from_pylist([{"path": path, "content": None}], schema=pa.schema([("path", pa.string()), ("content", pa.binary())]))
            out = pa.Table.from_batches(list(score(iter([batch]))), schema=schema).to_pandas()
            assert set(out["table_kind"]) <= set(TABLES)
        assert loads.value == 1
        cached = model_cache.cached_model(model_id(bundle), lambda: pytest.fail("built again"), on_load=lambda: loads.add(1))
        assert cached.labels == bundle.labels
        assert loads.value == 1
    finally:
        model_cache.clear()


def test_the_worker_factory_rebuilds_the_bundle_from_its_bytes_alone(bundle_dir: Path, tmp_path: Path) -> None:
    import pickle
    import shutil

    moved = shutil.copytree(bundle_dir, tmp_path / bundle_dir.name)
    bundle = load_bundle(moved)
    factory = pickle.loads(pickle.dumps(ScoringModelFactory(files=_Broadcast(bundle.files), source=str(moved), torch_threads=0)))
    shutil.rmtree(moved)  # the worker never reads the folder
    rebuilt = factory().bundle  # the worker's CallModel wraps the bundle
    assert (rebuilt.labels, rebuilt.path, model_id(rebuilt)) == (bundle.labels, bundle.path, model_id(bundle))
    stats = np.random.default_rng(0).standard_normal((3, bundle.model.n_stats)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.predict_proba({"stats": stats}), bundle.predict_proba({"stats": stats}))


def test_bytes_read_by_spark_score_like_the_file(bundle_dir: Path, calls_dir: Path) -> None:
    bundle = CallModel(load_bundle(bundle_dir))
    path = local_uri(str(calls_dir / "stereo.wav"))
    by_path = call_rows(path, str(calls_dir / "stereo.wav"), bundle, CallScoringConfig(), "all", "m")
    by_bytes = call_rows(path, (calls_dir / "stereo.wav").read_bytes(), bundle, CallScoringConfig(), "all", "m")
    assert by_path == by_bytes
    opened = spark_score.open_source(path, None, "pyarrow")
    assert opened == str(calls_dir / "stereo.wav")  # local files are opened by path in any mode


def _tiny_cnn_bundle(folder: Path, members: int) -> tuple[Path, dict[str, np.ndarray]]:
    """A CNN bundle (``members`` networks) with trained-looking batch norms, and a batch whose
    probabilities differ from row to row."""
    import torch

    from training.bundle.load import save_bundle
    from training.models.cnn import CnnArchitecture, CnnConfig, CnnEnsemble, build_model
    from training.taxonomy import Taxonomy

    from ser_udfs.features.config import FeatureConfig

    features = np.random.default_rng(0).normal(-40, 10, size=(3, 128, 94)).astype(np.float32)
    features[1, :, 30:60] += 30  # a loud stretch
    features[2, :40:2] -= 40  # low rows striped
    config = CnnConfig(channels=(4, 8), ensemble=members)
    nets = [build_model(config, input_rows=(128,), n_classes=2, train_features=features, seed=seed) for seed in range(members)]
    architecture = CnnArchitecture.from_config(config, input_rows=(128,), n_classes=2)
    model = CnnEnsemble(architecture, nets) if members > 1 else nets[0]
    generator = torch.Generator().manual_seed(1)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # as after training
        for tensor, low, high in ((norm.running_mean, -1, 1), (norm.running_var, 0.2, 3), (norm.weight, 0.5, 2),
                                  (norm.bias, -1, 1)):
            tensor.data.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
    path = save_bundle(
        folder / "tiny-cnn", model=model, taxonomy=Taxonomy("test", CALL_LABELS), labels=CALL_LABELS,
        feature_config=FeatureConfig(), training={}, metrics={},
    )
    return path, {"log_mel": features}


@pytest.mark.parametrize(("members", "runtime"), [(1, "torch"), (2, "torch"), (1, "onnx"), (2, "onnx")])
def test_a_cnn_bundle_scores_folded_and_channels_last_with_the_same_numbers(tmp_path: Path, members: int,
                                                                            runtime: str) -> None:
    import torch

    from training.models.cnn import networks
    from training.inference import load_scoring_model

    path, batch = _tiny_cnn_bundle(tmp_path, members)
    scoring = load_scoring_model(path, runtime=runtime)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scoring.model.modules())
    assert len(networks(scoring.model)) == members
    for network in networks(scoring.model):
        assert network.blocks[0].weight.is_contiguous(memory_format=torch.channels_last)
    reference = load_bundle(path).predict_proba(batch)
    assert np.ptp(reference[:, 0]) > 1e-3  # the check below compares outputs that differ
    np.testing.assert_allclose(scoring.predict_proba(batch), reference, atol=1e-5)
    assert scoring.cnn_predictor.runtime == runtime  # the exported graph passed its check and is what ran
    np.testing.assert_allclose(scoring.predict_proba({"log_mel": batch["log_mel"][:, :, :41]}),
                               load_bundle(path).predict_proba({"log_mel": batch["log_mel"][:, :, :41]}), atol=1e-5)
    in_worker = ScoringModelFactory(files=_Broadcast(scoring.files), source=str(path), torch_threads=0,
                                    cnn_runtime=runtime)().bundle
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in in_worker.model.modules())
    np.testing.assert_allclose(in_worker.predict_proba(batch), scoring.predict_proba(batch), atol=1e-6)
    assert in_worker.cnn_predictor.runtime == runtime


@pytest.mark.parametrize("fault", ["export fails", "graph differs"])
def test_an_onnx_graph_that_fails_or_differs_is_not_used(tmp_path: Path, monkeypatch, caplog, fault: str) -> None:
    import torch

    from training.inference import load_scoring_model
    from training.models import cnn_onnx

    path, batch = _tiny_cnn_bundle(tmp_path, 1)
    if fault == "export fails":
        monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unsupported op")))
    else:
        original = cnn_onnx.CnnPredictor._graph
        # a graph of another network: the probe check must catch it
        other = load_scoring_model(_tiny_cnn_bundle(tmp_path / "other", 2)[0], runtime="torch").model
        monkeypatch.setattr(cnn_onnx.CnnPredictor, "_graph",
                            lambda self, probe: original(cnn_onnx.CnnPredictor(other), probe))
    scoring = load_scoring_model(path, runtime="onnx")
    with caplog.at_level("WARNING", logger="training.models.cnn_onnx"):
        probabilities = scoring.predict_proba(batch)
    assert scoring.cnn_predictor.runtime == "torch"
    assert ("could not be exported" if fault == "export fails" else "differs from PyTorch") in caplog.text
    np.testing.assert_allclose(probabilities, load_bundle(path).predict_proba(batch), atol=1e-5)
