"""What the eGeMAPS column costs per clip and what it adds to the stats models, side by side.

Usage::

    python -m jobs.extract_features --input ../shared/data/ravdess-speech-16k --output T_EGEMAPS \\
        --set egemaps.enabled=true
    python bench/egemaps_gain.py --table T_EGEMAPS [--taxonomy core6] [--clips 300] [--rounds 3]
        [--set split.assignment=ravdess_emobox] [--work-dir /tmp/ser-egemaps-bench]

1. **Cost**: the per-clip function (:func:`ser_udfs.features.extract_file.extract_file`: decode,
   preprocess, features) on ``--clips`` of the table's files, with the table's feature config and
   with eGeMAPS turned off, in alternating rounds in this one process (one thread); CPU ms per
   clip of each and their difference.
2. **Gain**: ``jobs/train.py --model logreg`` on the table for each vector (``stats``,
   ``egemaps``, both side by side) and each normalisation (global with C = 1; per speaker with
   C = 0.1, as ``docs/RESULTS.md``'s stats models), the same split for all; UA mean ± std over
   the folds, and per fold.

The fused CNN is measured with ``bench/ensemble_gain.py --set 'cnn.stats_inputs=["stats",
"egemaps"]'`` (its CNNs are the same networks as without eGeMAPS: only the stats model changes).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_udfs.features.config import EgemapsConfig, FeatureConfig  # noqa: E402
from ser_udfs.features.extract_file import ExtractOptions, extract_file  # noqa: E402

VECTORS = (("stats",), ("egemaps",), ("stats", "egemaps"))
NORMALISATIONS = (("global", 1.0), ("speaker", 0.1))


def table_config(table: Path) -> FeatureConfig:
    """The feature config a table was extracted with (its ``_manifest.json``)."""
    return FeatureConfig.from_dict(json.loads((table / "_manifest.json").read_text())["feature_config"])


def clip_cost(paths: list[str], config: FeatureConfig, rounds: int) -> dict[str, list[float]]:
    """CPU ms per clip of the per-clip function with ``config`` and without eGeMAPS, per round (alternating)."""
    variants = {"with eGeMAPS": config, "without eGeMAPS": dataclasses.replace(config, egemaps=EgemapsConfig(False))}
    for name, variant in variants.items():  # warm-up: numba, the mel filterbank, openSMILE's config
        extract_file(paths[0], "warm-up", variant, ExtractOptions())
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds):
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            started = time.process_time()
            for index, path in enumerate(paths):
                extract_file(path, f"clip-{index}", variants[name], ExtractOptions())
            times[name].append((time.process_time() - started) / len(paths) * 1e3)
    return times


def train_logreg(table: Path, vector: tuple[str, ...], normalisation: str, c: float, taxonomy: str,
                 overrides: list[str], work: Path) -> dict:
    """``jobs/train.py --model logreg`` with this vector and normalisation; its ``metrics.json`` summary."""
    from jobs.train import main

    bundle = work / f"logreg-{'+'.join(vector)}-{normalisation}"
    argv = ["--features", str(table), "--model", "logreg", "--taxonomy", taxonomy, "--output", str(bundle),
            "--log-level", "WARNING", "--set", f"logreg.inputs={json.dumps(list(vector))}",
            "--set", f'logreg.normalisation="{normalisation}"', "--set", f"logreg.regularisation_c={c}"]
    for override in overrides:
        argv += ["--set", override]
    if main(argv) != 0:
        raise RuntimeError(f"training the logistic regression on {vector} failed")
    return json.loads((bundle / "metrics.json").read_text())["summary"]["ua"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="a features table extracted with --set egemaps.enabled=true")
    parser.add_argument("--taxonomy", default="core6")
    parser.add_argument("--clips", type=int, default=300, help="clips timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training overrides")
    parser.add_argument("--work-dir", default="/tmp/ser-egemaps-bench")
    args = parser.parse_args(argv)
    table, work = Path(args.table), Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config = table_config(table)
    if not config.egemaps.enabled:
        parser.error(f"{table} was extracted without eGeMAPS: extract it with --set egemaps.enabled=true")

    paths = sorted(set(pd.read_parquet(table / "features", columns=["path"])["path"]))[: args.clips]
    local = [path.removeprefix("file:") for path in paths]
    cost = clip_cost(local, config, args.rounds)
    print(f"\nPer-clip function, CPU ms per clip ({len(local)} clips, {args.rounds} alternating rounds, one thread)")
    print("| features | rounds | median |")
    print("|---|---|---|")
    for name, values in cost.items():
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {np.median(values):.1f} |")
    extra = [a - b for a, b in zip(cost["with eGeMAPS"], cost["without eGeMAPS"])]
    print(f"eGeMAPS adds {np.median(extra):.1f} ms per clip (median of the rounds' differences)")

    print(f"\nLogistic regression on {args.taxonomy}, UA ({' '.join(args.set) or 'default split'})")
    print("| vector | normalisation | C | UA mean ± std | per fold |")
    print("|---|---|---|---|---|")
    for normalisation, c in NORMALISATIONS:
        for vector in VECTORS:
            ua = train_logreg(table, vector, normalisation, c, args.taxonomy, args.set, work)
            folds = ", ".join(f"{value:.3f}" for value in ua.get("values", []))
            print(f"| {' + '.join(vector)} | {normalisation} | {c:g} | {ua['mean']:.3f} ± {ua.get('std', 0.0):.3f} "
                  f"| {folds} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
