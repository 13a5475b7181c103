"""Scoring speed and memory on generated long stereo telephone calls, logreg and CNN side by side.

Usage::

    python bench/score_throughput.py [--lengths-min 10 60 120] [--models logreg cnn]
        [--logreg-bundle DIR] [--cnn-bundle DIR] [--runtimes onnx torch] [--repeats 1] [--hop-s 1.5]
        [--spark] [--work-dir /tmp/ser-score-bench]

For each call length, a stereo 8 kHz µ-law call of alternating agent/customer turns (about 40 %
speech per channel) is written once to the work folder (:func:`ser_udfs.synthetic.calls.write_long_call`).
Each measurement runs in a fresh Python process pinned to one thread, as a Spark Python worker
runs: it loads the bundle and turns the call into the rows of the job's tables
(:func:`ser_udfs.calls.tables.call_rows`: scoring, timeline, summary, analytics) and those into
Arrow, then reports wall time, its own CPU time and its peak RSS. A CNN
is measured with each of ``--runtimes`` (``worker.cnn_runtime``: ONNX Runtime, PyTorch) side by
side, in alternating order over ``--repeats`` rounds; the one-off export of the ONNX graph, paid
once per worker process, is done before the clock starts and printed apart. A
``decode + VAD`` row streams the same call through decoding, resampling and speech detection
alone. ``--profile`` then scores the longest call once more under cProfile, per model, and prints
the CPU time of each step (decode and resampling, speech detection, window preprocessing,
features, the network, adaptation and calibration, timeline, analytics, table rows, Arrow, the rest). Real-time factors are audio seconds per CPU second of that single-threaded process, so
they are per core; "call" counts the call's duration once, "channel" counts each scored channel.

Without ``--logreg-bundle`` / ``--cnn-bundle`` the script builds bundles with the training code
(default CNN architecture and feature config; weights untrained, which does not change the work
done). ``--spark`` also scores the shortest and the longest call with ``jobs/score_calls.py`` in
``local[1]``, reports the Spark Python worker's peak RSS, and the real-time factor of the
difference of the two wall times (what the job costs whatever its input cancelled out).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import cProfile
import json
import pstats
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench.score_throughput")

CORE6 = ("angry", "disgust", "fear", "happy", "neutral", "sad")


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process' peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def build_bundles(work: Path) -> dict[str, Path]:
    """A logreg and a CNN bundle over the default feature config, made with the training code."""
    from ser_udfs.features.config import FeatureConfig
    from ser_udfs.features.compute import compute_features_batch
    from ser_udfs.audio.preprocess import preprocess
    from ser_udfs.synthetic.speech import synth_utterance
    from training.bundle.load import save_bundle
    from training.models.cnn import CnnConfig, build_model
    from training.models.logreg import LogregConfig, fit_logreg
    from training.taxonomy import Taxonomy

    config = FeatureConfig()
    clips, targets = [], []
    for target, label in enumerate(CORE6):
        for seed in range(4):
            wave = synth_utterance(label, speaker_seed=seed, utterance_seed=seed, sample_rate=16000, duration_s=2.5)
            clips.append(preprocess(wave[None], 16000, config.audio))
            targets.append(target)
    features = compute_features_batch(np.stack(clips), 16000, config)
    taxonomy = Taxonomy("core6", CORE6, {"calm": "neutral"})
    paths = {}
    logreg = fit_logreg(features["stats"], np.array(targets), n_classes=len(CORE6), config=LogregConfig(), seed=0)
    paths["logreg"] = save_bundle(work / "bundle-logreg", model=logreg, taxonomy=taxonomy, labels=CORE6,
                                  feature_config=config, training={"note": "benchmark"}, metrics={})
    cnn = build_model(CnnConfig(), input_rows=(config.mel.n_mels,), n_classes=len(CORE6),
                      train_features=features["log_mel"], seed=0)
    paths["cnn"] = save_bundle(work / "bundle-cnn", model=cnn, taxonomy=taxonomy, labels=CORE6,
                               feature_config=config, training={"note": "benchmark, untrained weights"}, metrics={})
    return paths


#: The steps of scoring a call and the functions whose cumulative time is each one's.
PROFILE_STEPS = {
    "decode + resample": [("ser_udfs/calls/stream.py", "_channel_blocks")],
    "speech detection": [("ser_udfs/audio/vad.py", "push"), ("ser_udfs/audio/vad.py", "finish")],
    "window preprocessing": [("ser_udfs/audio/preprocess.py", "check_not_silent"),
                             ("ser_udfs/audio/preprocess.py", "condition_clip")],
    "features": [("ser_udfs/features/compute.py", "compute_features_batch")],
    "network (per window)": [("training/inference.py", "window_outputs")],
    "adaptation + calibration": [("training/inference.py", "channel_probabilities")],
    "timeline + summary": [("ser_udfs/calls/timeline.py", "call_timeline")],
    "analytics": [("ser_udfs/calls/analytics.py", "analyse_call")],
    "Arrow rows": [("bench/score_throughput.py", "_arrow_tables")],
}

#: Steps whose time is their function's minus the listed steps inside it.
PROFILE_OWN_TIME = {
    "table rows": (("ser_udfs/calls/tables.py", "call_rows"),
                   ("ser_udfs/calls/stream.py", "score_call"), ("ser_udfs/calls/timeline.py", "call_timeline"),
                   ("ser_udfs/calls/analytics.py", "analyse_call")),
}


def profile_split(stats: pstats.Stats, total_s: float) -> dict[str, float]:
    """Seconds of each of :data:`PROFILE_STEPS` (cumulative, under the profiler), and the rest."""
    def cumulative_s(functions) -> float:
        return sum(cumulative for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items()
                   if any(path.endswith(file) and name == function for file, function in functions))

    split = {step: cumulative_s(functions) for step, functions in PROFILE_STEPS.items()}
    for step, (outer, *inner) in PROFILE_OWN_TIME.items():
        split[step] = max(0.0, cumulative_s([outer]) - cumulative_s(inner))
    split["other (batching, Python glue)"] = max(0.0, total_s - sum(split.values()))
    return split


def _arrow_tables(rows: list[dict]) -> dict[str, Any]:
    """The rows of each table as a ``pyarrow.Table``, as a Spark Python worker hands them on (schema inferred here)."""
    import pyarrow as pa

    kinds = sorted({row["table_kind"] for row in rows})
    return {kind: pa.Table.from_pylist([row for row in rows if row["table_kind"] == kind]) for kind in kinds}


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    if args.stage == "spark":
        print(json.dumps(_spark_worker_rss(Path(args.call), Path(args.bundle), Path(args.work_dir), args.runtime)))
        return
    import torch

    torch.set_num_threads(1)
    from ser_udfs.calls.config import CallScoringConfig, WindowConfig
    from ser_udfs.calls.tables import call_rows
    from training.inference import load_call_model

    config = CallScoringConfig(window=WindowConfig(hop_s=args.hop_s))
    rss_before = _rss_mb()
    export_s = 0.0
    if args.stage == "vad":
        result = _decode_and_detect(Path(args.call), config)
        rss_loaded = rss_before
    else:
        model = load_call_model(args.bundle, runtime=args.runtime)
        predictor = model.bundle.cnn_predictor
        if predictor is not None:  # the export a worker pays once, when it first scores
            started = time.process_time()
            predictor.prepare(rows=sum(model.bundle.model.architecture.input_rows))
            export_s = time.process_time() - started
            if predictor.runtime != args.runtime:
                raise RuntimeError(f"asked for the {args.runtime} runtime, got {predictor.runtime} (see the log)")
        rss_loaded = _rss_mb()
        profile = cProfile.Profile(time.process_time) if args.stage == "profile" else None  # CPU, as cpu_s
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        rows = call_rows(str(args.call), args.call, model, config, "all", "bench", customer_channel=1)
        tables = _arrow_tables(rows)
        if profile:
            profile.disable()
        call = tables["calls"].to_pylist()[0]
        result = {
            "cpu_s": time.process_time() - started_cpu,
            "wall_s": time.perf_counter() - started_wall,
            "duration_s": call["duration_s"],
            "channels": len(call["scored_channels"]),
            "speech_s": sum(tables["channels"].column("talk_s").to_pylist()),
            "windows": call["windows_scored"],
            "segments": tables["segments"].num_rows,
        }
    if args.stage == "profile":
        result["split_s"] = profile_split(pstats.Stats(profile), result["cpu_s"])
    result.update(
        export_s=export_s,
        rss_imports_mb=rss_before,
        rss_loaded_mb=rss_loaded,
        peak_rss_mb=_peak_rss_mb(),
    )
    print(json.dumps(result))


def _decode_and_detect(path: Path, config) -> dict[str, float]:
    """Stream decode → resample to 16 kHz → speech detection, as scoring does, without windows."""
    from ser_udfs.calls.stream import speech_turns
    from ser_udfs.features.config import AudioConfig

    started_cpu, started_wall = time.process_time(), time.perf_counter()
    info, turns = speech_turns(path, AudioConfig(), config)
    return {
        "cpu_s": time.process_time() - started_cpu,
        "wall_s": time.perf_counter() - started_wall,
        "duration_s": info.duration_s,
        "channels": info.channels,
        "speech_s": sum(int((regions[:, 1] - regions[:, 0]).sum()) for _, regions in turns) / 16000,
        "windows": 0,
        "segments": 0,
    }


def _run_child(script: Path, **options: str) -> dict[str, float]:
    command = [sys.executable, str(script), "--child"]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _spark_worker_rss(call: Path, bundle: Path, work: Path, runtime: str = "onnx") -> dict[str, float]:
    """Score ``call`` with the job in local[1] (in and out of the folder ``work``); wall time, and
    peak RSS and CPU of the Python worker and the JVM."""
    os.environ["SER_SPARK_MASTER"] = "local[1]"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from bench._procstat import measure
    from jobs._cli import run
    from jobs.score_calls import main

    inputs = work / "spark-input"
    inputs.mkdir(parents=True, exist_ok=True)
    link = inputs / call.name
    if not link.exists():
        link.symlink_to(call)
    arguments = ["--input", str(inputs), "--model", str(bundle), "--output", str(work / "spark-output"), "--log-level", "WARNING",
                 "--set", f'worker.cnn_runtime="{runtime}"']
    status, wall_s, usage = measure(lambda: run(main, arguments), interval_s=0.5)
    if status != 0:
        raise RuntimeError(f"the scoring job failed with status {status}")
    return {
        "wall_s": wall_s,
        "python_worker_peak_rss_mb": usage.peak_rss_bytes.get("python_worker", 0) / 2**20,
        "jvm_peak_rss_mb": usage.peak_rss_bytes.get("jvm", 0) / 2**20,
        "python_worker_cpu_s": usage.cpu_s_by_kind.get("python_worker", 0.0),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths-min", type=float, nargs="+", default=[10.0, 60.0, 120.0])
    parser.add_argument("--models", nargs="+", default=["logreg", "cnn"], choices=["logreg", "cnn"])
    parser.add_argument("--logreg-bundle")
    parser.add_argument("--cnn-bundle")
    parser.add_argument("--runtimes", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"],
                        help="what runs a CNN (worker.cnn_runtime), each measured")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every measurement, in alternating order")
    parser.add_argument("--hop-s", type=float, default=1.5)
    parser.add_argument("--spark", action="store_true",
                        help="also run the job (local[1]) on the shortest and the longest call")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each model on the longest call and print where the time goes")
    parser.add_argument("--work-dir", default="/tmp/ser-score-bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", default="score", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--call", help=argparse.SUPPRESS)
    parser.add_argument("--runtime", default="onnx", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure_calls(args: argparse.Namespace, bundles: dict[str, str], work: Path) -> list[dict[str, float]]:
    """One row per call length and stage (``decode + VAD``, then each model), each from a fresh process."""
    from ser_udfs.synthetic.calls import write_long_call

    script = Path(__file__).resolve()
    rows = []
    for minutes in args.lengths_min:
        call = work / f"call-{minutes:g}min-stereo-8k-ulaw.wav"
        if not call.exists():
            log.info("writing %s", call)
            write_long_call(call, minutes * 60.0, channels=2, sample_rate=8000, encoding="ulaw", seed=1)
        stages = [("decode + VAD", "")] + [
            (name, runtime) for name in args.models for runtime in (args.runtimes if name == "cnn" else ["torch"])
        ]
        for repeat in range(args.repeats):
            for name, runtime in stages if repeat % 2 == 0 else stages[:1] + stages[:0:-1]:
                what = f"{name} ({runtime})" if name == "cnn" else name
                log.info("%s on the %g min call, round %d", what, minutes, repeat + 1)
                if name == "decode + VAD":
                    result = _run_child(script, stage="vad", call=call, hop_s=args.hop_s)
                else:
                    result = _run_child(script, bundle=bundles[name], call=call, hop_s=args.hop_s, runtime=runtime)
                rows.append({"what": what, "minutes": minutes, "round": repeat + 1, **result})
    return rows


def print_rows(rows: list[dict[str, float]], hop_s: float) -> None:
    print()
    print(f"Scoring throughput, one thread per process, hop {hop_s} s, stereo 8 kHz µ-law calls")
    print("| what | call | round | speech (both ch.) | windows | wall s | CPU s | RTF call/CPU-s | RTF channel/CPU-s "
          "| peak RSS MB | RSS after model load MB | one-off export s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        call_rtf = row["duration_s"] / row["cpu_s"]
        print(
            f"| {row['what']} | {row['minutes']:g} min | {row['round']} | {row['speech_s'] / 60:.1f} min | {row['windows']} "
            f"| {row['wall_s']:.1f} | {row['cpu_s']:.2f} | {call_rtf:.0f}× | {call_rtf * row['channels']:.0f}× "
            f"| {row['peak_rss_mb']:.0f} | {row['rss_loaded_mb']:.0f} | {row['export_s']:.2f} |"
        )
    print_runtime_ratios(rows)


def print_runtime_ratios(rows: list[dict[str, float]]) -> None:
    """CPU time of the CNN under PyTorch over ONNX Runtime, round by round, when both were measured."""
    cpu = {(row["what"], row["minutes"], row["round"]): row["cpu_s"] for row in rows}
    pairs = sorted({(minutes, rnd) for what, minutes, rnd in cpu if what == "cnn (onnx)"
                    and ("cnn (torch)", minutes, rnd) in cpu})
    if not pairs:
        return
    print("\nThe CNN's call, PyTorch CPU s over ONNX Runtime CPU s, per round (higher: ONNX Runtime faster)")
    for minutes in sorted({minutes for minutes, _ in pairs}):
        ratios = [cpu[("cnn (torch)", minutes, rnd)] / cpu[("cnn (onnx)", minutes, rnd)] for m, rnd in pairs if m == minutes]
        print(f"- {minutes:g} min: " + ", ".join(f"{ratio:.2f}×" for ratio in ratios)
              + f" (median {float(np.median(ratios)):.2f}×, {len(ratios)} rounds)")


def print_split(name: str, minutes: float, result: dict) -> None:
    """Where the CPU time of scoring one call goes (under cProfile, which slows Python calls)."""
    total = result["cpu_s"]
    print(f"\nWhere the time goes, {name}, {minutes:g} min stereo call, under cProfile ({total:.1f} CPU s)")
    print("| step | s | share |")
    print("|---|---|---|")
    for step, seconds in result["split_s"].items():
        print(f"| {step} | {seconds:.2f} | {seconds / total:.0%} |")


def print_spark_runs(args: argparse.Namespace, bundles: dict[str, str], work: Path) -> None:
    """The job in ``local[1]`` on the shortest and the longest call, per model, each in a fresh
    process as ``spark-submit`` runs it: worker RSS, and the real-time factor of the difference,
    which cancels what a job costs whatever its input (the JVM, the session, the workers' imports,
    model load and export)."""
    lengths = sorted({min(args.lengths_min), max(args.lengths_min)})
    for name, runtime in [(name, runtime) for name in args.models for runtime in (args.runtimes if name == "cnn" else ["torch"])]:
        runs = {}
        what = f"{name} ({runtime})" if name == "cnn" else name
        for minutes in lengths:
            call = work / f"call-{minutes:g}min-stereo-8k-ulaw.wav"
            log.info("the scoring job with %s on the %g min call, local[1]", what, minutes)
            runs[minutes] = spark = _run_child(Path(__file__).resolve(), stage="spark", bundle=bundles[name], call=call,
                                               runtime=runtime, work_dir=work / f"spark-{minutes:g}")
            print(
                f"\nSpark job, local[1], {what}, {minutes:g} min stereo call: wall {spark['wall_s']:.1f} s, "
                f"Python worker CPU {spark['python_worker_cpu_s']:.1f} s, "
                f"Python worker peak RSS {spark['python_worker_peak_rss_mb']:.0f} MB, JVM peak RSS {spark['jvm_peak_rss_mb']:.0f} MB"
            )
        if len(lengths) == 2:
            short, long = lengths
            extra_s = runs[long]["wall_s"] - runs[short]["wall_s"]
            call_rtf = (long - short) * 60.0 / extra_s
            print(f"Spark job, {what}, start-up cancelled out ({long:g} min against {short:g} min, wall): "
                  f"{call_rtf:.0f}× real time per stereo call, {2 * call_rtf:.0f}× per scored channel")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    bundles = {"logreg": args.logreg_bundle, "cnn": args.cnn_bundle}
    if not all(bundles[name] for name in args.models):
        built = build_bundles(work)
        bundles = {name: bundles[name] or built[name] for name in bundles}
    print_rows(measure_calls(args, bundles, work), args.hop_s)
    if args.profile:
        longest = max(args.lengths_min)
        call = work / f"call-{longest:g}min-stereo-8k-ulaw.wav"
        for name in args.models:
            runtime = args.runtimes[0] if name == "cnn" else "torch"
            result = _run_child(Path(__file__).resolve(), stage="profile", bundle=bundles[name], call=call,
                                hop_s=args.hop_s, runtime=runtime)
            print_split(f"{name} ({runtime})" if name == "cnn" else name, longest, result)
    if args.spark:
        print_spark_runs(args, bundles, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
