"""Refit the fused stats model on saved folds and fuse it with the saved CNN probabilities.

Usage::

    python bench/ensemble_gain.py --table T --set cnn.stats_fusion_weight=0.35 ... --save SAVED
    python bench/fusion_refit.py --table T --saved SAVED [--taxonomies core6,ravdess8]
        [--weights 0.35,0.45] [--members N] [--set KEY=VALUE ...]

A fold's networks do not depend on the stats model fused with them, so a change to the stats
model alone (its inputs, normalisation, C or ``cnn.stats_regularisation_search``) or to the
fusion weight can be measured without training networks again. For every fold ``SAVED`` holds,
this fits the stats model as the training job does (:meth:`training.kinds.CnnKind.fit_stats_model`
on the fold's training side, the same split and seed as ``bench/ensemble_gain.py``), fuses it
with the saved ensemble probabilities at each weight, and prints UA per fold and the mean beside the saved run's stats
model and fused model. With ``--set 'cnn.stats_fusion_weight_search=[...]'`` it also chooses each
fold's weight as the training job does, on the speakers that fold held out to early-stop on (the
saved CNN probabilities on them, the stats model refitted without them). Give the ``--set``
options of the saved run (``split.assignment``, and the CNN's) and change only the stats model's.
``--members N`` takes the ensemble of the saved run's first N networks (the mean of their
probabilities, as :class:`training.models.cnn.CnnEnsemble` predicts): members are seeded alike
whatever the ensemble's size, so a run saved with ``--members 3`` also gives the two-network figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs._spark import build_spark  # noqa: E402
from ser_udfs.errors import UserError  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.feature_table import columns_for, read_feature_table  # noqa: E402
from training.data import TrainingData, table_feature_config  # noqa: E402
from training.kinds import CnnKind  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402
from training.models.fusion import fuse_probabilities  # noqa: E402
from training.protocol import TrainConfig, map_labels, model_kind  # noqa: E402
from training.splits import Split, make_splits  # noqa: E402
from training.taxonomy import load_taxonomy  # noqa: E402


def saved_ensemble(saved: dict[str, np.ndarray], members: int | None, fold: int) -> np.ndarray:
    """The test probabilities ``[n, k]`` of the ensemble of the saved run's first ``members`` networks
    (``None``: all of them, the saved ensemble)."""
    if members is None or members == len(saved["members"]):
        return saved["ensemble"]
    if members > len(saved["members"]):
        raise UserError(f"fold {fold}: --members {members}, but the saved run has {len(saved['members'])} networks")
    return saved["members"][:members].mean(axis=0)


def refit_fold(kind: CnnKind, data: TrainingData, config: TrainConfig, split: Split, fold: int,
               saved: dict[str, np.ndarray], weights: list[float], members: int | None = None) -> dict[str, float]:
    """UA of the saved models and of the refitted stats model (alone and fused at each weight) on
    fold ``fold`` (1-based), ``split``; the ensemble is that of the saved run's first ``members``
    networks (``None``: all)."""
    rows = split.test_index[data.is_original[split.test_index]]
    if list(data.frame["path"].iloc[rows].astype(str)) != list(saved["paths"]):
        raise UserError(f"fold {fold}: the saved test clips are not this split's; give the saved run's --set options")
    labels = list(saved["labels"])

    def ua(probabilities: np.ndarray) -> float:
        return classification_metrics(saved["targets"], probabilities.argmax(axis=1), labels)["ua"]

    ensemble = saved_ensemble(saved, members, fold)
    if config.cnn.stats_fusion_weight_search:
        if "held_out_ensemble" not in saved:
            raise UserError(f"fold {fold}: the saved run holds no held-out probabilities to choose the fusion weight on; "
                            "save it again with this bench/ensemble_gain.py")
        if members is not None and members != len(saved["members"]):
            raise UserError(f"fold {fold}: the saved held-out probabilities are those of all {len(saved['members'])} networks; "
                            "choose the fusion weight without --members")
    seed = config.seed + fold - 1
    model, stats_config = kind.fit_stats_model(data, split.train_index, seed=seed)
    assert data.stats is not None
    stats = model.predict_proba(data.stats[rows], data.corpora[rows])
    result = {"ensemble": ua(ensemble), "saved stats": ua(saved["stats"]), "saved fused": ua(saved["fused"]),
              "C": stats_config.regularisation_c, "stats": ua(stats)}
    result.update({f"fused {weight:g}": ua(fuse_probabilities(ensemble, stats, weight)) for weight in weights})
    if config.cnn.stats_fusion_weight_search:
        train_rows, held_out, _ = data.fit_rows(split.train_index, epochs=None, method=kind.split_method,
                                                fraction=config.cnn.validation_fraction, seed=seed, log_prefix="")
        assert held_out is not None
        if list(data.frame["path"].iloc[held_out].astype(str)) != list(saved["held_out_paths"]):
            raise UserError(f"fold {fold}: the saved held-out clips are not this split's; give the saved run's --set options")
        held_out_model = kind.held_out_stats_model(data, train_rows, stats_config, seed=seed)
        weight = kind.fusion_weight(saved["held_out_ensemble"], held_out_model, data, held_out)
        result |= {"chosen weight": weight, "fused, chosen weight": ua(fuse_probabilities(ensemble, stats, weight))}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="the features table of the saved run")
    parser.add_argument("--saved", type=Path, required=True, help="bench/ensemble_gain.py --save DIR")
    parser.add_argument("--taxonomies", default="core6,ravdess8")
    parser.add_argument("--weights", default="0.35", help="fusion weights of the refitted stats model, comma-separated")
    parser.add_argument("--members", type=int, help="the ensemble of the saved run's first N networks (default: all)")
    parser.add_argument("--config", default=str(ROOT / "conf" / "train_cnn.toml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    weights = [float(weight) for weight in args.weights.split(",")]
    if args.members is not None and args.members < 1:
        parser.error("--members must be at least 1")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = build_spark("ser-bench-fusion-refit")
    for taxonomy_name in args.taxonomies.split(","):
        files = sorted(args.saved.glob(f"{taxonomy_name}-fold*.npz"), key=lambda path: int(path.stem.rsplit("fold", 1)[1]))
        if not files:
            print(f"{taxonomy_name}: no saved folds in {args.saved}")
            continue
        config = resolve_config(TrainConfig, args.config, ['model="cnn"', f'taxonomy="{taxonomy_name}"', *args.set])
        if config.cnn.stats_fusion_weight <= 0:
            parser.error("give the saved run's --set cnn.stats_fusion_weight (> 0)")
        frame, manifest = read_feature_table(spark, args.table, feature_columns=columns_for(config.feature_inputs()))
        taxonomy = load_taxonomy(config.taxonomy)
        kind = model_kind(config, taxonomy=taxonomy)
        mapped, labels, _ = map_labels(frame, taxonomy)
        data = kind.training_data(mapped, labels, table_feature_config(frame, manifest["feature_config"]))
        splits = make_splits(data.frame, config.split, seed=config.seed)
        results = {}
        for path in files:
            fold = int(path.stem.rsplit("fold", 1)[1])
            if fold > len(splits):
                raise UserError(f"{path.name}: the split has {len(splits)} folds; give the saved run's --set options")
            with np.load(path) as saved:
                results[fold] = refit_fold(kind, data, config, splits[fold - 1], fold, dict(saved), weights, args.members)
        columns = list(next(iter(results.values())))
        print(f"\n{taxonomy_name}: UA per fold, the saved run's models and the refitted stats model "
              f"({config.split.describe()}; {' '.join(args.set)})")
        print("| fold | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for fold, row in [*results.items(), ("mean", {key: np.mean([r[key] for r in results.values()]) for key in columns})]:
            print(f"| {fold} | " + " | ".join(f"{row[key]:g}" if key in ("C", "chosen weight") else f"{row[key]:.3f}" for key in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
