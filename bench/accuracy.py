"""Reproduce the accuracy table of docs/RESULTS.md from ../shared/data in one command.

Usage::

    python bench/accuracy.py [--data ../shared/data/ravdess-speech-16k] [--table DIR]
        [--models logreg,cnn] [--taxonomies core6,ravdess8] [--work /tmp/ser-accuracy]
        [--parallel 2] [--set cnn.max_epochs=40 ...]

Extracts features with the project's own job (unless ``--table`` names a finished table), then
trains every model on every taxonomy with 6-fold speaker-independent cross-validation through
``jobs/train.py``, and prints UA/WA/macro-F1 (mean ± std over folds) and the training time.
``--parallel N`` runs N training jobs at once, each CNN with one torch thread so that N jobs fill
N cores without over-subscribing them; each job's log is written to ``WORK/<model>-<taxonomy>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ravdess-speech-16k"


def _job(module: str, *args: str, log: Path | None = None) -> float:
    """Run ``python -m module args``; its output goes to ``log`` when given. Returns wall seconds."""
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    command = [sys.executable, "-m", module, *args, "--log-level", "INFO" if log else "WARNING"]
    started = time.perf_counter()
    if log is None:
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    else:
        with log.open("w") as stream:
            if subprocess.run(command, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - started


def _cell(summary: dict, name: str) -> str:
    value = summary[name]
    return f"{value['mean']:.3f} ± {value['std']:.3f}" if isinstance(value, dict) else f"{value:.3f}"


#: Config sections that belong to one model kind: their overrides go to that model's runs only.
MODEL_SECTIONS = ("cnn", "logreg")


def _overrides_for(model: str, pairs: list[str], parallel: int) -> list[str]:
    """``--set`` arguments of one ``jobs/train.py`` run (another model's sections left out)."""
    chosen = [pair for pair in pairs if pair.split(".")[0] not in MODEL_SECTIONS or pair.split(".")[0] == model]
    if parallel > 1 and model == "cnn":
        chosen.append("cnn.torch_threads=1")
    return [item for pair in chosen for item in ("--set", pair)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--table", help="a finished features table to reuse")
    parser.add_argument("--models", default="logreg,cnn")
    parser.add_argument("--taxonomies", default="core6,ravdess8")
    parser.add_argument("--folds", default="6")
    parser.add_argument("--work", default="/tmp/ser-accuracy")
    parser.add_argument("--parallel", type=int, default=1, help="training jobs run at once (one torch thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override for jobs/train.py (cnn.* and logreg.* reach that model's runs only)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    table = args.table
    if table is None:
        if not Path(args.data).is_dir():
            parser.error(f"no data at {args.data}")
        table = str(work / "features")
        seconds = _job("jobs.extract_features", "--input", args.data, "--output", table)
        print(f"extracted {args.data} in {seconds:.0f} s", flush=True)
    runs = [(taxonomy, model) for taxonomy in args.taxonomies.split(",") for model in args.models.split(",")]
    work.mkdir(parents=True, exist_ok=True)

    def train(run: tuple[str, str]) -> tuple[str, ...]:
        taxonomy, model = run
        bundle = work / f"{model}-{taxonomy}"
        seconds = _job("jobs.train", "--features", table, "--model", model, "--taxonomy", taxonomy,
                       "--folds", args.folds, "--output", str(bundle), *_overrides_for(model, args.set, args.parallel),
                       log=work / f"{model}-{taxonomy}.log" if args.parallel > 1 else None)
        summary = json.loads((bundle / "metrics.json").read_text())["summary"]
        row = (taxonomy, model, _cell(summary, "ua"), _cell(summary, "accuracy"), _cell(summary, "macro_f1"),
               f"{seconds:.0f}")
        print(f"{taxonomy} {model}: UA {row[2]} ({seconds:.0f} s)", flush=True)
        return row

    rows, failed = [], []
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = [pool.submit(train, run) for run in runs]
        for run, future in zip(runs, futures):
            try:
                rows.append(future.result())
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                failed.append(" ".join(run))
                print(f"{' '.join(run)}: FAILED ({exc})", flush=True)
    print()
    print(f"| taxonomy | model | UA | WA | macro-F1 | train s |  ({args.folds}-fold speaker-independent)")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
