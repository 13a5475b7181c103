"""Does per-speaker mean and variance normalisation of the CNN's log-mel rows help on held-out
speakers? The train job's CNN against the same CNN on speaker-standardised maps, side by side.

Usage::

    python bench/cnn_speaker_norm.py --table T [--folds 6] [--taxonomy core6]
        [--set cnn.max_epochs=5 ...] [--work-dir /tmp/ser-cnn-speaker-norm]

``T`` is a features table written by ``jobs/extract_features.py``. Two runs of the train job's
own protocol (:func:`training.protocol.train_from_frame`, what ``jobs/train.py --model cnn``
calls), with ``conf/train_cnn.toml``, the same ``--set`` overrides, splits and seed, so each
fold's two figures are paired:

- **baseline**: the CNN exactly as ``jobs/train.py --model cnn`` trains it
  (``cnn.normalisation = "utterance"``: each clip's rows centred on their own mean, scaled by one
  std of the clip).
- **speaker-norm**: a copy of the frame whose ``log_mel`` maps ``[n_mels, frames]`` are
  standardised with their speaker's statistics first: per mel row, the mean and std over all
  frames of all that speaker's clips (:func:`speaker_standardised_log_mel`). No labels are used,
  and a test speaker's statistics come from that speaker's clips alone, as call scoring would
  compute them per call channel. The network then trains with ``cnn.normalisation = "dataset"``.

Why ``"dataset"``: it subtracts the training rows' mean per mel row and divides by their std
per row (:meth:`training.models.cnn.EmotionCnn.normalise`, statistics fixed by
:func:`training.models.cnn.build_model`). After per-speaker standardisation every training
speaker's rows have mean 0 and std 1, so those statistics are ≈0 and ≈1 and the step leaves the
speaker-normalised input as it is; the comparison is of the two normalisations, nothing else.
``"utterance"`` on top would subtract each clip's own row means again, and with them the shift
of a clip's spectrum against its speaker's average (louder, brighter, higher), which is what
per-speaker normalisation is meant to expose; only a per-speaker rescaling would be left.

Each run writes a bundle under ``--work-dir`` (``baseline/`` and ``speaker-norm/``); the
speaker-norm bundle expects speaker-standardised maps, which neither ``jobs/evaluate.py`` nor
call scoring computes, so it is a record of this measurement, not a model to deploy. With
``--folds K >= 2`` each run also does the protocol's final refit on all rows (not scored here).
Prints UA and WA (accuracy) per fold for both runs, the paired difference (speaker-norm minus
baseline), mean ± std over folds (sample std) and the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._command import command_line  # noqa: E402
from jobs._cli import CONF_DIR, run, setup_logging  # noqa: E402
from jobs._spark import build_spark  # noqa: E402
from ser_udfs.errors import UserError  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.feature_table import columns_for, read_feature_table  # noqa: E402
from training.bundle.format import METRICS_FILE  # noqa: E402
from training.data import feature_batch, standardisation_groups  # noqa: E402
from training.protocol import TrainConfig, train_from_frame  # noqa: E402
from training.speaker_norm import speaker_standardise  # noqa: E402

log = logging.getLogger("ser_spark.bench.cnn_speaker_norm")

CONFIG_FILE = CONF_DIR / "train_cnn.toml"
RUNS = ("baseline", "speaker-norm")
#: The headline figures compared: UA and WA (the protocol's ``accuracy``).
FIGURES = (("ua", "UA"), ("accuracy", "WA"))


def speaker_standardised_log_mel(frame: pd.DataFrame) -> pd.Series:
    """Each row's log-mel map standardised per mel row with its speaker's statistics.

    Parameters
    ----------
    frame
        Features rows with ``log_mel`` (flat, as read from the table), ``log_mel_shape``
        ``[n_mels, frames]``, ``corpus``, ``speaker`` and optionally ``augmentation``.

    Returns
    -------
    pd.Series
        Indexed like ``frame``: flat float32 arrays of the maps ``[n_mels, frames]`` with
        ``(log_mel[r, t] - mean_g[r]) / std_g[r]``, where ``mean_g``, ``std_g`` ``[n_mels]`` are
        over all frames of all clips of the row's group ``g`` (:func:`training.data.standardisation_groups`:
        the speaker, and an augmented copy's effects, as the stats model is standardised), with
        the std floor of :func:`training.speaker_norm.speaker_standardise`.
    """
    maps = feature_batch(frame, ["log_mel"])["log_mel"]  # [n, n_mels, frames]
    n_clips, n_mels, n_frames = maps.shape
    frames = maps.transpose(0, 2, 1).reshape(-1, n_mels)  # [n * frames, n_mels]
    groups = np.repeat(standardisation_groups(frame), n_frames)
    standardised = speaker_standardise(frames, groups).astype(np.float32)
    standardised = standardised.reshape(n_clips, n_frames, n_mels).transpose(0, 2, 1)
    log.info("standardised %d log-mel maps [%d, %d] with the statistics of %d speaker groups",
             n_clips, n_mels, n_frames, len(set(groups)))
    return pd.Series([np.ascontiguousarray(clip).ravel() for clip in standardised], index=frame.index, name="log_mel")


def run_configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
    """The baseline's resolved config and the speaker-norm run's (the same, ``cnn.normalisation = "dataset"``)."""
    if any(override.split("=", 1)[0].strip() == "cnn.normalisation" for override in args.overrides):
        raise UserError("--set cnn.normalisation is what this benchmark compares; drop it")
    overrides = ['model="cnn"', f"taxonomy={json.dumps(args.taxonomy)}", f"split.folds={args.folds}", *args.overrides]
    baseline = resolve_config(TrainConfig, CONFIG_FILE, overrides)
    if tuple(baseline.cnn.inputs) != ("log_mel",):
        raise UserError(f"the benchmark normalises log_mel only, but cnn.inputs is {list(baseline.cnn.inputs)}; "
                        'drop the --set of cnn.inputs')
    if baseline.cnn.normalisation != "utterance":
        raise UserError(f"{CONFIG_FILE} sets cnn.normalisation = {baseline.cnn.normalisation!r}; "
                        'the baseline is the default "utterance"')
    variant = resolve_config(TrainConfig, CONFIG_FILE, [*overrides, 'cnn.normalisation="dataset"'])
    return {"baseline": baseline, "speaker-norm": variant}


def fold_figures(result: dict, bundle_dir: Path) -> dict[str, list]:
    """Per fold: UA, WA and the test speakers, from :func:`train_from_frame`'s result and ``metrics.json``."""
    metrics = json.loads((bundle_dir / METRICS_FILE).read_text())
    if "folds" in metrics:
        speakers = [fold["test_speakers"] for fold in metrics["folds"]]
        figures = {name: list(result["metrics"][name]["values"]) for name, _ in FIGURES}
    else:
        speakers = [metrics["holdout"]["test_speakers"]]
        figures = {name: [float(result["metrics"][name])] for name, _ in FIGURES}
    return {**figures, "test_speakers": speakers}


def _mean_std(values: np.ndarray, *, signed: bool = False) -> str:
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return f"{float(values.mean()):{'+' if signed else ''}.3f} ± {std:.3f}"


def print_table(figures: dict[str, dict[str, list]], *, description: str, taxonomy: str, command: str) -> None:
    """The CLI's output: per fold UA and WA of both runs and their paired difference, then mean ± std."""
    baseline, variant = figures["baseline"], figures["speaker-norm"]
    n_folds = len(baseline["ua"])
    print(f"\nCNN, {taxonomy}, {description}: utterance normalisation (baseline) against per-speaker "
          'log-mel standardisation + cnn.normalisation="dataset" (speaker-norm); Δ = speaker-norm − baseline')
    header = [f"{run} {label}" for _, label in FIGURES for run in ("baseline", "speaker-norm")]
    header += [f"Δ {label}" for _, label in FIGURES]
    print("| fold | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    columns = {name: (np.array(baseline[name]), np.array(variant[name])) for name, _ in FIGURES}
    for fold in range(n_folds):
        cells = [f"{columns[name][side][fold]:.3f}" for name, _ in FIGURES for side in (0, 1)]
        cells += [f"{columns[name][1][fold] - columns[name][0][fold]:+.3f}" for name, _ in FIGURES]
        print(f"| {fold + 1} | " + " | ".join(cells) + " |")
    if n_folds > 1:
        cells = [_mean_std(columns[name][side]) for name, _ in FIGURES for side in (0, 1)]
        cells += [_mean_std(columns[name][1] - columns[name][0], signed=True) for name, _ in FIGURES]
        print(f"| mean ± std ({n_folds} folds) | " + " | ".join(cells) + " |")
    else:
        print("(one holdout split: no spread over folds; the difference is one paired figure)")
    print(f"\ncommand: {command}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="a features table (jobs/extract_features.py --output)")
    parser.add_argument("--folds", type=int, default=6, help="speaker-independent folds (1 = the holdout split)")
    parser.add_argument("--taxonomy", default="core6", help="core6, ravdess8, basic4, or your own TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of conf/train_cnn.toml in both runs (repeatable)")
    parser.add_argument("--work-dir", default="/tmp/ser-cnn-speaker-norm", help="where the two bundles go")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.folds < 1:
        parser.error("--folds must be at least 1")
    setup_logging(args.log_level)
    command = command_line("cnn_speaker_norm.py", argv)
    configs = run_configs(args)
    work_dir = Path(args.work_dir)

    spark = build_spark("ser-bench-cnn-speaker-norm")
    frame, manifest = read_feature_table(spark, args.table, feature_columns=columns_for(configs["baseline"].feature_inputs()))
    spark.stop()
    log.info("%d labelled rows from %s", len(frame), args.table)
    variant_frame = frame.copy()
    variant_frame["log_mel"] = speaker_standardised_log_mel(frame)
    frames = {"baseline": frame, "speaker-norm": variant_frame}

    figures = {}
    for name in RUNS:
        bundle_dir = work_dir / name
        log.info("training %s (cnn.normalisation=%s) into %s", name, configs[name].cnn.normalisation, bundle_dir)
        result = train_from_frame(frames[name], configs[name], feature_config=manifest["feature_config"],
                                  output_dir=bundle_dir)
        figures[name] = fold_figures(result, bundle_dir)
    if figures["baseline"]["test_speakers"] != figures["speaker-norm"]["test_speakers"]:
        raise RuntimeError("the two runs were tested on different speakers; the figures are not paired")
    print_table(figures, description=configs["baseline"].split.describe(), taxonomy=configs["baseline"].taxonomy,
                command=command)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
