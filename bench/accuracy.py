"""Reproduce the accuracy table of docs/RESULTS.md from ../shared/data in one command.

Usage::

    python bench/accuracy.py [--data ../shared/data/ravdess-speech-16k] [--table DIR]
        [--models logreg,cnn] [--taxonomies core6,ravdess8] [--work /tmp/ser-accuracy]

Extracts features with the project's own job (unless ``--table`` names a finished table), then
trains every model on every taxonomy with 6-fold speaker-independent cross-validation through
``jobs/train.py``, and prints UA/WA/macro-F1 (mean ± std over folds) and the training time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ravdess-speech-16k"


def _job(module: str, *args: str) -> float:
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *args, "--log-level", "WARNING"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


def _cell(summary: dict, name: str) -> str:
    value = summary[name]
    return f"{value['mean']:.3f} ± {value['std']:.3f}" if isinstance(value, dict) else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--table", help="a finished features table to reuse")
    parser.add_argument("--models", default="logreg,cnn")
    parser.add_argument("--taxonomies", default="core6,ravdess8")
    parser.add_argument("--folds", default="6")
    parser.add_argument("--work", default="/tmp/ser-accuracy")
    args = parser.parse_args()
    work = Path(args.work)
    table = args.table
    if table is None:
        if not Path(args.data).is_dir():
            parser.error(f"no data at {args.data}")
        table = str(work / "features")
        seconds = _job("jobs.extract_features", "--input", args.data, "--output", table)
        print(f"extracted {args.data} in {seconds:.0f} s", flush=True)
    rows = []
    for taxonomy in args.taxonomies.split(","):
        for model in args.models.split(","):
            bundle = work / f"{model}-{taxonomy}"
            seconds = _job("jobs.train", "--features", table, "--model", model, "--taxonomy", taxonomy,
                           "--folds", args.folds, "--output", str(bundle))
            summary = json.loads((bundle / "metrics.json").read_text())["summary"]
            rows.append((taxonomy, model, _cell(summary, "ua"), _cell(summary, "accuracy"),
                         _cell(summary, "macro_f1"), f"{seconds:.0f}"))
            print(f"{taxonomy} {model}: UA {rows[-1][2]} ({seconds:.0f} s)", flush=True)
    print()
    print(f"| taxonomy | model | UA | WA | macro-F1 | train s |  ({args.folds}-fold speaker-independent)")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
