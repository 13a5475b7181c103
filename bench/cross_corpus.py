"""How a model trained on one corpus holds up on another, and what training on several costs each.

Usage::

    python -m jobs.extract_features --input ../shared/data/ravdess-speech-16k \\
        --manifest ../shared/data/banglaser-16k/manifest.csv --output T_BOTH
    python bench/cross_corpus.py --table T_BOTH [--taxonomy basic4] [--model logreg]
        [--assignment ravdess=ravdess_emobox] [--folds 6] [--set KEY=VALUE ...] [--work-dir DIR]

One features table holds every corpus (column ``corpus``); only the taxonomy's classes are used
(basic4: angry, happy, neutral, sad, which RAVDESS and BanglaSER share). For each corpus ``C``
the bench fixes ``C``'s speaker-independent folds: a shipped or given assignment file
(``--assignment ravdess=ravdess_emobox``), or ``--folds`` folds drawn once over ``C``'s speakers
and written as an assignment file in the work folder. Then, with the training job's own
procedure (:func:`training.protocol.train_from_frame`, ``conf/train_<model>.toml`` plus
``--set`` overrides):

- **within** ``C`` (the diagonal): cross-validated on ``C``'s folds, ``C``'s rows only;
- **C → D** (off the diagonal): the model refitted on all of ``C`` (the bundle of the run
  above), tested on every clip of each other corpus ``D``;
- **all → C**: cross-validated on ``C``'s folds on the whole table; the other corpora's
  speakers are trained on in every fold and never tested, so the figure is ``C``'s, and its
  difference from **within** ``C`` is what training on several corpora costs (or gains) ``C``.

It prints UA (and WA) as a matrix, train sets by row, test corpora by column.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs._spark import build_spark  # noqa: E402
from ser_udfs.settings import resolve_config  # noqa: E402
from ser_udfs.spark.feature_table import columns_for, read_feature_table  # noqa: E402
from training.bundle.load import load_bundle  # noqa: E402
from training.evaluate import evaluate_frame  # noqa: E402
from training.protocol import TrainConfig, map_labels, train_from_frame  # noqa: E402
from training.splits import SplitConfig, assignment_path, make_splits  # noqa: E402
from training.taxonomy import load_taxonomy  # noqa: E402

log = logging.getLogger("bench.cross_corpus")


def corpus_folds(frame: pd.DataFrame, corpus: str, given: dict[str, str], folds: int, seed: int, work: Path) -> str:
    """The assignment file of ``corpus``'s test folds: the given one, or folds drawn over its speakers, written down."""
    if corpus in given:
        return str(assignment_path(given[corpus]))
    rows = frame[frame["corpus"] == corpus].reset_index(drop=True)
    splits = make_splits(rows, SplitConfig(folds=folds), seed=seed)
    path = work / f"{corpus}_folds.toml"
    text = [f"# {folds} folds drawn over the speakers of {corpus} (StratifiedGroupKFold, seed {seed})"]
    for split in splits:
        speakers = sorted({key.split("/", 1)[1] for key in split.summary(rows)["test_speakers"]})
        text += ["", "[[fold]]", f"{json.dumps(corpus)} = {json.dumps(speakers)}"]
    path.write_text("\n".join(text) + "\n")
    return str(path)


def cross_validate(frame: pd.DataFrame, config_with: Callable[..., TrainConfig], assignment: str,
                   feature_config: dict, output: Path) -> dict:
    """``train_from_frame`` on ``frame`` with the folds of ``assignment``; its headline metrics (mean, std, values)."""
    config = config_with(f"split.assignment={json.dumps(assignment)}")
    return train_from_frame(frame, config, feature_config=feature_config, output_dir=output)["metrics"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="one features table holding every corpus")
    parser.add_argument("--taxonomy", default="basic4")
    parser.add_argument("--model", default="logreg", choices=["logreg", "cnn"])
    parser.add_argument("--assignment", action="append", default=[], metavar="CORPUS=FILE",
                        help="a corpus's folds from an assignment file (e.g. ravdess=ravdess_emobox)")
    parser.add_argument("--folds", type=int, default=6, help="folds drawn for corpora without --assignment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training overrides")
    parser.add_argument("--work-dir", default="/tmp/ser-cross-corpus")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    given = dict(item.split("=", 1) for item in args.assignment)

    source = ROOT / "conf" / f"train_{args.model}.toml"
    overrides = [f'model="{args.model}"', f"taxonomy={json.dumps(args.taxonomy)}", f"seed={args.seed}", *args.set]

    def config_with(*extra: str) -> TrainConfig:
        return resolve_config(TrainConfig, source, [*overrides, *extra])

    spark = build_spark("ser-bench-cross-corpus")
    frame, manifest = read_feature_table(spark, args.table, feature_columns=columns_for(config_with().feature_inputs()))
    mapped, _, _ = map_labels(frame, load_taxonomy(args.taxonomy))
    corpora = sorted(mapped["corpus"].unique())
    if len(corpora) < 2:
        parser.error(f"{args.table} holds one corpus ({corpora}) of the taxonomy's classes: give a table of several")
    folds = {corpus: corpus_folds(mapped, corpus, given, args.folds, args.seed, work) for corpus in corpora}
    feature_config = manifest["feature_config"]

    within, cross, together = {}, {}, {}
    for corpus in corpora:
        rows = mapped[mapped["corpus"] == corpus].reset_index(drop=True)
        bundle_dir = work / f"within-{corpus}"
        within[corpus] = cross_validate(rows, config_with, folds[corpus], feature_config, bundle_dir)
        log.warning("within %s: UA %.3f", corpus, within[corpus]["ua"]["mean"])
        bundle = load_bundle(bundle_dir)
        for other in corpora:
            if other != corpus:
                test = mapped[mapped["corpus"] == other].reset_index(drop=True)
                cross[corpus, other] = evaluate_frame(test, bundle, work / f"{corpus}-to-{other}",
                                                      feature_config=feature_config)["metrics"]
        together[corpus] = cross_validate(mapped.reset_index(drop=True), config_with, folds[corpus], feature_config,
                                          work / f"all-on-{corpus}-folds")

    description = f"{args.model} ({' '.join(args.set) or 'defaults'}), {args.taxonomy}"
    print(f"\nCross-corpus UA, {description}; rows: trained on, columns: tested on")
    print("| trained on | " + " | ".join(corpora) + " |")
    print("|---|" + "---|" * len(corpora))
    for corpus in corpora:
        cells = [f"{within[corpus]['ua']['mean']:.3f} ± {within[corpus]['ua']['std']:.3f} (folds)" if other == corpus
                 else f"{cross[corpus, other]['ua']:.3f}" for other in corpora]
        print(f"| {corpus} | " + " | ".join(cells) + " |")
    print("| all corpora | " + " | ".join(
        f"{together[c]['ua']['mean']:.3f} ± {together[c]['ua']['std']:.3f} ({c}'s folds)" for c in corpora) + " |")
    print("| all − within | " + " | ".join(
        f"{together[c]['ua']['mean'] - within[c]['ua']['mean']:+.3f}" for c in corpora) + " |")
    print("\nWA (accuracy) of the same runs")
    for corpus in corpora:
        cells = [f"{within[corpus]['accuracy']['mean']:.3f}" if other == corpus else f"{cross[corpus, other]['accuracy']:.3f}"
                 for other in corpora]
        print(f"| {corpus} | " + " | ".join(cells) + " |")
    print("| all corpora | " + " | ".join(f"{together[c]['accuracy']['mean']:.3f}" for c in corpora) + " |")
    print("\nfolds: " + "; ".join(f"{corpus}: {Path(path).name}" for corpus, path in folds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
