"""Single CNNs against their ensemble (and its fusion with a stats model), fold by fold, with the
train job's own procedure.

Usage::

    python bench/ensemble_gain.py --table T [--taxonomies core6,ravdess8] [--members 2]
        [--folds 1,2,3,4,5,6] [--parallel 2] [--config conf/train_cnn.toml] [--set cnn.max_epochs=40 ...]
        [--set cnn.stats_fusion_weight=0.35] [--save DIR]

``T`` is a features table written by ``jobs/extract_features.py`` (e.g. from
``../shared/data/ravdess-speech-16k``). For every taxonomy and chosen fold of the config's
speaker-independent split, fits the fold's model as ``jobs/train.py --set cnn.ensemble=N`` does
(same splits, seeds, inner validation and early stopping), then scores each member network alone
and the ensemble on the fold's held-out speakers. Member 1 is the network that
``cnn.ensemble = 1`` trains. With ``--set cnn.stats_fusion_weight=W`` it also scores the stats
model alone and the fused model (what the bundle predicts). Prints UA per fold and the mean over
the chosen folds, side by side;
the final refit of ``jobs/train.py`` is skipped, so a fold costs N networks. ``--parallel P`` runs
P folds at once, each with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs._spark import build_spark  # noqa: E402
from ser_udfs.spark.feature_table import columns_for, read_feature_table  # noqa: E402
from ser_udfs.features.config import FeatureConfig  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from training.models.cnn import networks  # noqa: E402
from training.models.fusion import FusedModel  # noqa: E402
from training.data import table_feature_config  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402
from training.splits import make_splits  # noqa: E402
from training.taxonomy import load_taxonomy  # noqa: E402
from training.protocol import TrainConfig, evaluate_split, map_labels, model_kind  # noqa: E402

_FRAME: pd.DataFrame | None = None
_TABLE_CONFIG: FeatureConfig | None = None


def _init_worker(frame: pd.DataFrame, table_config: FeatureConfig, log_level: str) -> None:
    import torch

    global _FRAME, _TABLE_CONFIG
    _FRAME, _TABLE_CONFIG = frame, table_config
    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s")


def _fold(config: TrainConfig, fold: int, save: Path | None) -> dict:
    """Fit fold ``fold`` (1-based) of ``config``'s split; UA of each member and of the ensemble.

    With ``save``, writes the fold's test clips and every model's probabilities there
    (``<taxonomy>-fold<k>.npz``: ``paths``, ``speakers``, ``targets``, ``labels``, ``members``
    ``[m, n, k]``, ``ensemble`` ``[n, k]``, and ``stats`` and ``fused`` for a fused model; and the
    clips the fit held out to early-stop on: ``held_out_paths``, ``held_out_ensemble`` ``[h, k]``).
    """
    assert _FRAME is not None and _TABLE_CONFIG is not None
    started = time.perf_counter()
    taxonomy = load_taxonomy(config.taxonomy)
    kind = model_kind(config, taxonomy=taxonomy)
    mapped, labels, _ = map_labels(_FRAME, taxonomy)
    data = kind.training_data(mapped, labels, _TABLE_CONFIG)
    split = make_splits(data.frame, config.split, seed=config.seed)[fold - 1]
    model, _, held_out = kind.fit(data, split.train_index, seed=config.seed + fold - 1, log_prefix=f"{split.name}: ",
                                  epochs=None)
    cnn = model.cnn if isinstance(model, FusedModel) else model
    members = [evaluate_split(kind, network, data, split) for network in networks(cnn)]
    ensemble = evaluate_split(kind, cnn, data, split)
    rows = ensemble["rows"]
    result = {"members": [member["metrics"]["ua"] for member in members], "ensemble": ensemble["metrics"]["ua"]}
    saved = {"members": np.stack([member["probabilities"] for member in members]), "ensemble": ensemble["probabilities"]}
    if isinstance(model, FusedModel):
        assert data.stats is not None
        saved["stats"] = model.stats_model.predict_proba(data.stats[rows], data.corpora[rows])
        result["stats"] = classification_metrics(data.targets[rows], saved["stats"].argmax(axis=1), data.labels)["ua"]
        fused = evaluate_split(kind, model, data, split)
        saved["fused"], result["fused"] = fused["probabilities"], fused["metrics"]["ua"]
    if save is not None:
        assert held_out is not None
        _, held_rows, _ = data.fit_rows(split.train_index, epochs=None, method=kind.split_method,
                                        fraction=config.cnn.validation_fraction, seed=config.seed + fold - 1, log_prefix="")
        assert held_rows is not None and np.array_equal(data.targets[held_rows], held_out.targets)
        cnn_held_out = held_out.probabilities if held_out.fallback_probabilities is None else held_out.fallback_probabilities
        saved |= {"held_out_paths": data.frame["path"].iloc[held_rows].to_numpy(dtype=str), "held_out_ensemble": cnn_held_out}
        frame = data.frame.iloc[rows]
        np.savez_compressed(
            save / f"{config.taxonomy}-fold{fold}.npz", paths=frame["path"].to_numpy(dtype=str),
            speakers=frame["speaker"].to_numpy(dtype=str), targets=data.targets[rows], labels=np.array(data.labels), **saved,
        )
    return {**result, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="a features table (jobs/extract_features.py --output)")
    parser.add_argument("--taxonomies", default="core6,ravdess8")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--folds", help="1-based folds to run, comma-separated (default: all)")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--config", default=str(ROOT / "conf" / "train_cnn.toml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--save", type=Path, help="a folder for each fold's test probabilities (one .npz per fold)")
    parser.add_argument("--log-level", default="WARNING", help="of the training workers (INFO: one line per epoch)")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error("--members must be at least 1")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    configs = {
        taxonomy: resolve_config(TrainConfig, args.config, [
            'model="cnn"', f'taxonomy="{taxonomy}"', f"cnn.ensemble={args.members}", *args.set,
        ])
        for taxonomy in args.taxonomies.split(",")
    }
    first = next(iter(configs.values()))
    folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(1, first.split.folds + 1))
    spark = build_spark("ser-bench-ensemble")
    frame, manifest = read_feature_table(spark, args.table, feature_columns=columns_for(first.feature_inputs()))
    table_config = table_feature_config(frame, manifest["feature_config"])

    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    tasks = [(taxonomy, fold) for taxonomy in configs for fold in folds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.parallel, mp_context=context, initializer=_init_worker, initargs=(frame, table_config, args.log_level)) as pool:
        futures = {task: pool.submit(_fold, configs[task[0]], task[1], args.save) for task in tasks}
        results = {}
        for task, future in futures.items():
            results[task] = future.result()
            print(f"{task[0]} fold {task[1]}: {json.dumps(results[task])}", flush=True)

    print()
    members = [f"member {k + 1}" for k in range(args.members)]
    fused = first.cnn.stats_fusion_weight > 0
    extra = ["stats model", f"fused ({first.cnn.stats_fusion_weight:g})"] if fused else []
    print(f"UA per fold ({first.split.describe()}, {len(folds)} of {first.split.folds} folds), "
          f"{args.members} networks against their ensemble" + (" and its fusion with the stats model" if fused else ""))
    print("| taxonomy | fold | " + " | ".join(members + ["mean of members", "ensemble", "gain", *extra]) + " |")
    print("|---" * (args.members + 5 + len(extra)) + "|")
    for taxonomy in configs:
        rows = [results[(taxonomy, fold)] for fold in folds]
        for fold, row in zip(folds + ["mean"], rows + [None]):
            if row is None:
                row = {key: np.mean([r[key] for r in rows], axis=0) for key in rows[0] if key != "seconds"}
            singles, ensemble = np.array(row["members"]), float(row["ensemble"])
            mean = float(singles.mean())
            cells = [f"{value:.3f}" for value in singles] + [f"{mean:.3f}", f"{ensemble:.3f}", f"{ensemble - mean:+.3f}"]
            cells += [f"{float(row[key]):.3f}" for key in ("stats", "fused") if fused]
            print(f"| {taxonomy} | {fold} | " + " | ".join(cells) + " |")
    seconds = [results[task]["seconds"] for task in tasks]
    print(f"\nfold wall time: {np.mean(seconds) / 60:.1f} min mean ({args.parallel} at once, one torch thread each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
