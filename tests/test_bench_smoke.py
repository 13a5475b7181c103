"""A tiny, untimed run of bench/extract_throughput.py on generated clips, to keep it working."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _procstat, extract_throughput
from ser_udfs.synthetic.speech import write_demo_corpus

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-source")
    write_demo_corpus(root, n_actors=1, statements=1, repetitions=1, emotions=["neutral", "angry", "sad"])
    return root


def test_benchmark_runs_every_step_and_prints_its_tables(spark, source: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "--source", str(source), "--work-dir", str(tmp_path / "work"), "--clips", "12", "--cores", "2",
        "--per-core-clips", "4", "--equivalence-clips", "2", "--warmup-clips", "0",
        "--memory-clips", "6", "--variant", "spark-writer:output.writer=spark",
    ]
    assert extract_throughput.main(argv) == 0
    printed = capsys.readouterr().out
    for heading in ("## Machine", "## Per core", "## Equivalence with librosa", "## Throughput", "## Spark memory"):
        assert heading in printed, printed
    assert "| NO" not in printed and "|  NO" not in printed, printed
    assert "Pool(2) extract_file" in printed and "Spark local[2] job (spark-writer)" in printed
    assert "x the Pool's clips/s on 2 core(s)" in printed
    assert (tmp_path / "work" / "clips").is_dir()
    assert not (tmp_path / "work" / "spark-out").exists()


def test_replicated_corpus_keeps_names_and_counts(source: Path, tmp_path: Path) -> None:
    from bench._corpus import prepare_masters, replicate

    masters = prepare_masters(source, tmp_path, sample_rate=48000, limit=3)
    corpus = replicate(masters, tmp_path / "clips", 7)
    assert len(corpus.paths) == len(set(corpus.paths)) == 7
    assert corpus.distinct_files == 3
    assert all(Path(path).name.startswith("03-01-") and path.endswith(".wav") for path in corpus.paths)
    import soundfile as sf

    assert sf.info(corpus.paths[0]).samplerate == 48000


@pytest.mark.skipif(not _procstat.available(), reason="needs /proc (Linux)")
def test_cpu_of_exited_pool_workers_is_counted_once() -> None:
    import math
    import multiprocessing
    import time

    sizes = [30000] * 8
    started = time.process_time()
    for size in sizes:
        math.factorial(size)
    expected = time.process_time() - started
    context = multiprocessing.get_context("forkserver")

    def work() -> None:
        with context.Pool(2) as pool:
            pool.map(math.factorial, sizes)

    work()  # starts the fork server outside the measurement
    _, _, usage = _procstat.measure(work)
    assert 0.7 * expected <= usage.cpu_s <= 1.3 * expected + 0.3


def test_speaker_norm_bench_standardises_each_speakers_log_mel_rows_over_its_own_frames() -> None:
    import numpy as np
    import pandas as pd

    from bench.cnn_speaker_norm import speaker_standardised_log_mel

    rng = np.random.default_rng(0)
    rows = []
    for speaker, offset in (("01", -40.0), ("02", -10.0)):
        for augmentation in (None, None, "telephone"):
            log_mel = rng.normal(offset + (20.0 if augmentation else 0.0), 5.0, (4, 6)).astype(np.float32)
            rows.append({"corpus": "ravdess", "speaker": speaker, "augmentation": augmentation,
                         "log_mel": log_mel.ravel(), "log_mel_shape": np.array([4, 6])})
    frame = pd.DataFrame(rows)
    standardised = np.stack([values.reshape(4, 6) for values in speaker_standardised_log_mel(frame)])
    for speaker in ("01", "02"):  # a speaker's originals together, its telephone copy on its own
        originals = standardised[((frame["speaker"] == speaker) & frame["augmentation"].isna()).to_numpy()]
        frames = originals.transpose(0, 2, 1).reshape(-1, 4)
        np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-4)


def test_scoring_benchmark_measures_both_cnn_runtimes_side_by_side(tmp_path: Path, capsys) -> None:
    from bench import score_throughput

    argv = ["--lengths-min", "0.3", "--models", "cnn", "--repeats", "2", "--work-dir", str(tmp_path)]
    assert score_throughput.main(argv) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| cnn (")]
    assert [row.split(" | ")[0] for row in rows] == ["| cnn (onnx)", "| cnn (torch)", "| cnn (torch)", "| cnn (onnx)"]
    assert all(float(row.split(" | ")[-1].rstrip(" |")) > 0 for row in rows if "onnx" in row)  # the export, apart
    assert "- 0.3 min: " in printed and "2 rounds" in printed


def test_cross_corpus_benchmark_prints_the_matrix_of_two_corpora(spark, tmp_path: Path, capsys) -> None:
    import soundfile as sf

    from bench import cross_corpus
    from jobs import extract_features
    from ser_udfs.synthetic.speech import synth_utterance

    write_demo_corpus(tmp_path / "first", n_actors=3, statements=1, repetitions=1,
                      emotions=["neutral", "happy", "sad", "angry"])
    lines = ["path,label,speaker,corpus"]
    for speaker in range(3):
        for label in ("neutral", "happy", "sad", "angry"):
            for take in range(2):
                name = f"second/{speaker}-{label}-{take}.wav"
                (tmp_path / "second").mkdir(exist_ok=True)
                wave = synth_utterance(label, speaker_seed=10 + speaker, utterance_seed=take, duration_s=1.0)
                sf.write(tmp_path / name, wave, 16000)
                lines.append(f"{name},{label},s{speaker},second")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    table = tmp_path / "table"
    argv = ["--input", str(tmp_path / "first"), "--manifest", str(tmp_path / "manifest.csv"), "--output", str(table),
            "--log-level", "WARNING", "--set", "mel.n_mels=32"]
    assert extract_features.main(argv) == 0
    capsys.readouterr()
    assert cross_corpus.main(["--table", str(table), "--folds", "3", "--work-dir", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    ua_table = printed.split("WA (accuracy)")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in ua_table.splitlines() if line.startswith("| ")}
    assert "(folds)" in rows["ravdess"] and "(folds)" in rows["second"]
    assert "ravdess's folds" in rows["all corpora"] and "second's folds" in rows["all corpora"]
    assert rows["all − within"].count("+") + rows["all − within"].count("-") >= 2
    assert (tmp_path / "work" / "ravdess_folds.toml").is_file()  # folds drawn, written down
