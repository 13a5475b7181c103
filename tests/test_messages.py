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
