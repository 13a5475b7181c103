"""What a new user is told when they pass the wrong thing: one sentence that says what was wrong
and what works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ser_udfs.errors import UserError
from ser_udfs.folders import what_folder_holds
from tests.builders import call_bundle


def _fake_output(folder: Path, job: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "_manifest.json").write_text(json.dumps({"job": job}))
    (folder / "_SUCCESS").write_text("")
    return folder


def test_a_features_table_given_as_a_model_says_what_it_is(tmp_path: Path) -> None:
    from training.bundle.load import load_bundle

    table = _fake_output(tmp_path / "features", "extract_features")
    with pytest.raises(UserError, match=r"is a features table \(written by jobs/extract_features.py\), not a model "
                                        r"bundle; give the --output folder of jobs/train.py"):
        load_bundle(table)
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="is incomplete"):  # an unknown folder: what is missing
        load_bundle(tmp_path / "half")


@pytest.mark.spark
def test_a_model_given_as_a_features_table_says_what_it_is(spark, tmp_path: Path) -> None:
    from ser_udfs.spark.feature_table import open_feature_table

    bundle = call_bundle(tmp_path / "bundle")
    assert what_folder_holds(str(bundle)) == "a logreg model bundle (written by jobs/train.py)"
    with pytest.raises(UserError, match="is a logreg model bundle .*, not a features table; give the --output folder "
                                        "of jobs/extract_features.py"):
        open_feature_table(spark, str(bundle))
    scores = _fake_output(tmp_path / "scores", "score_calls")
    with pytest.raises(UserError, match="is the scores of calls"):
        open_feature_table(spark, str(scores))


@pytest.mark.parametrize(("argv", "message"), [
    (["jobs.train", "--features", "/nonexistent/table", "--model", "logreg", "--output", "OUT"],
     "--features /nonexistent/table does not exist"),
    (["jobs.train", "--features", ".", "--model", "logreg", "--output", "OUT", "--taxonomy", "nosuch"], "nosuch"),
    (["jobs.extract_features", "--input", "/nonexistent/corpus", "--output", "OUT"],
     "--input /nonexistent/corpus does not exist"),
    (["jobs.score_calls", "--input", "/nonexistent/calls/*.wav", "--model", "M", "--output", "OUT"], None),
])
def test_bad_paths_and_names_are_refused_before_spark_starts_in_one_line(
    argv: list[str], message: str | None, tmp_path: Path
) -> None:
    import subprocess
    import sys
    import time

    from tests.builders import REPO

    if argv[0] == "jobs.score_calls":  # the input is checked before the model is even loaded
        argv = [*argv[:4], str(call_bundle(tmp_path / "bundle")), *argv[5:]]
        message = "--input /nonexistent/calls/*.wav does not exist (the pattern matches nothing)"
    argv = [part.replace("OUT", str(tmp_path / "out")) for part in argv]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    elapsed_s = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "SparkContext" not in done.stderr and not (tmp_path / "out").exists()
    assert elapsed_s < 60  # no Spark session (its start alone costs seconds); generous for a loaded machine


def test_training_curves_are_titled_and_their_legend_is_readable_and_clear_of_the_panels() -> None:
    from matplotlib import pyplot as plt

    from training.fitting import TrainingHistory
    from training.plots import LEGEND_FONT_SIZE, training_curves_figure

    history = TrainingHistory(train_loss=[1.2, 0.9, 0.8], validation_loss=[1.3, 1.1, 1.2],
                              validation_ua=[0.3, 0.4, 0.38], best_epoch=2)
    title = "training curves: cnn, core6\nspeaker-independent 6-fold"
    figure = training_curves_figure([(f"fold {i}/6", history) for i in range(1, 7)], title=title)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    assert figure.get_suptitle() == title
    assert all(text.get_fontsize() >= LEGEND_FONT_SIZE >= 8 for text in legend.get_texts())
    assert len(legend.get_texts()) == 12  # train and validation of each fold
    legend_box = legend.get_window_extent(renderer)
    for axes in figure.axes:
        assert not legend_box.overlaps(axes.get_tightbbox(renderer))
    plt.close(figure)


class _Stage:
    def __init__(self, tasks: int, done: int) -> None:
        self.numTasks, self.numCompletedTasks = tasks, done


class _Tracker:
    """A status tracker whose stages move as a test says."""

    def __init__(self) -> None:
        self.stages: dict[int, _Stage] = {}

    def getActiveStageIds(self) -> list[int]:
        return list(self.stages)

    def getStageInfo(self, stage_id: int) -> _Stage:
        return self.stages[stage_id]


class _Context:
    def __init__(self, tracker: _Tracker) -> None:
        self.tracker = tracker

    def statusTracker(self) -> _Tracker:
        return self.tracker


def test_progress_counts_files_by_finished_tasks_of_the_main_stage_with_rate_and_time_left() -> None:
    from ser_udfs.progress import Progress
    from ser_udfs.spark.progress import JobProgress

    tracker, now = _Tracker(), [100.0]
    progress = JobProgress(_Context(tracker), "extraction", files=5000, tasks=20, clock=lambda: now[0])
    tracker.stages = {0: _Stage(2, 2)}  # the listing's stage: not the main one
    assert progress.progress().done == 0
    tracker.stages = {0: _Stage(2, 2), 1: _Stage(20, 2)}
    now[0] = 150.0
    line = progress.progress().describe("extraction")
    assert line == "extraction: 500 of 5000 files (10%), 10.0 files/s, about 7 min 30 s left"
    tracker.stages = {}  # between stages: what was done stays done
    assert progress.progress().done == 500
    assert Progress(5000, 5000, 3725.0).describe("scoring") == "scoring: 5000 of 5000 files (100%), 1.3 files/s, 1 h 2 min in all"
    assert Progress(2, 6, 1440.0).describe("training", unit="folds") == \
        "training: 2 of 6 folds (33%), 12 min 0 s per fold, about 48 min 0 s left"


def test_progress_lines_come_at_a_steady_pace_while_the_job_runs(caplog) -> None:
    import time

    from ser_udfs.spark.progress import JobProgress

    tracker = _Tracker()
    tracker.stages = {1: _Stage(4, 1)}
    with caplog.at_level("INFO", logger="ser_udfs.spark.progress"):
        with JobProgress(_Context(tracker), "scoring", files=40, tasks=4, every_s=0.05):
            time.sleep(0.3)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) >= 3 and all(line.startswith("scoring: 10 of 40 files (25%)") for line in lines[:-1])
    assert lines[-1].startswith("scoring: 40 of 40 files (100%)")
