"""Extraction throughput: the report's per-clip code, a Pool and the Spark job, side by side.

Usage::

    .venv/bin/python -m bench.extract_throughput                  # 5,000 clips on every core
    .venv/bin/python -m bench.extract_throughput --quick          # 400 clips, about a minute
    .venv/bin/python -m bench.extract_throughput --cores 1,2 --memory-clips 1000,20000 \\
        --variant jvm-writer:output.writer=spark

The input is built from ``../shared/data/ravdess-speech-16k`` (or ``--source``): each distinct
clip is up-sampled once to 48 kHz 16-bit WAV, the rate of the RAVDESS originals, and hard-linked
until there are ``--clips`` files in a temporary folder. Then, in one run, on the same files:

1. per core: the report's per-clip code (:mod:`bench.report_baseline`) against the project's
   per-clip function (:func:`ser_udfs.features.extract_file.extract_file`), one process, one BLAS thread,
   in alternating blocks of clips so that other load on the machine hits both alike;
2. equivalence: the project's waveform and features against librosa's on some of the clips;
3. on N cores (each of ``--cores``): ``multiprocessing.Pool(N)`` mapping ``extract_file`` over
   the files (features computed and dropped), and the extraction job
   (:mod:`jobs.extract_features`, ``local[N]``, writing its Parquet tables) with the start of
   Spark's JVM timed apart; ``--repeats`` alternates the two;
4. ``--memory-clips``: peak memory of Spark's JVM and of its largest Python worker at each input
   size (flat memory per executor).

Every figure is measured in this run; ratios compare runs made side by side. CPU seconds (all
processes of a pipeline, from ``/proc``) move much less with other load than wall time.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script or with -m

from bench import _procstat  # noqa: E402
from bench._corpus import DEFAULT_SOURCE, BenchmarkCorpus, Masters, prepare_masters, replicate  # noqa: E402
from bench._equivalence import compare_with_librosa  # noqa: E402
from bench.report_baseline import report_clip_features  # noqa: E402
from ser_udfs.errors import ClipError  # noqa: E402
from ser_udfs.features.extract_file import ExtractOptions, clip_id_for, extract_file  # noqa: E402
from ser_udfs.features.config import FeatureConfig  # noqa: E402

log = logging.getLogger("bench.extract_throughput")

QUICK_CLIPS = 400


@dataclass
class Run:
    """One timed run of one pipeline."""

    pipeline: str
    cores: int
    clips: int
    audio_s: float
    wall_s: float
    cpu_s: float
    repeat: int = 0
    peak_rss: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s

    @property
    def audio_s_per_s_per_core(self) -> float:
        return self.audio_s / self.wall_s / self.cores

    @property
    def cpu_ms_per_clip(self) -> float:
        return 1e3 * self.cpu_s / self.clips


# --------------------------------------------------------------------------------------------
# Per-core speed: the report's code against the project's, in one process


def _pin_threads() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _project_clip(path: str, config: FeatureConfig, options: ExtractOptions) -> int:
    try:
        _, clips = extract_file(path, clip_id_for(path), config, options)
    except ClipError:
        return 0
    return len(clips)


def per_core_speed(paths: Sequence[str], audio_s: float, config: FeatureConfig, *, block: int = 25) -> list[Run]:
    """Time the report's pipeline and the project's on ``paths``, alternating blocks of clips.

    Both run in this process with one BLAS thread; CPU time is this process' own.
    """
    _pin_threads()
    options = ExtractOptions()
    pipelines = {
        "report (librosa, per clip)": lambda path: report_clip_features(path),
        "project (extract_file)": lambda path: _project_clip(path, config, options),
    }
    for function in pipelines.values():  # first calls build caches and import lazily
        function(paths[0])
    wall = dict.fromkeys(pipelines, 0.0)
    cpu = dict.fromkeys(pipelines, 0.0)
    for start in range(0, len(paths), block):
        chunk = paths[start : start + block]
        for name, function in pipelines.items():
            wall_started, cpu_started = time.perf_counter(), time.process_time()
            for path in chunk:
                function(path)
            wall[name] += time.perf_counter() - wall_started
            cpu[name] += time.process_time() - cpu_started
        log.info("per-core speed: %d/%d clips", min(start + block, len(paths)), len(paths))
    return [Run(name, 1, len(paths), audio_s, wall[name], cpu[name]) for name in pipelines]


# --------------------------------------------------------------------------------------------
# multiprocessing.Pool over the project's per-clip function

_POOL_STATE: dict[str, Any] = {}


def _pool_init(feature_config: dict[str, Any]) -> None:
    _pin_threads()
    _POOL_STATE["config"] = FeatureConfig.from_dict(feature_config)
    _POOL_STATE["options"] = ExtractOptions()


def _pool_extract(path: str) -> int:
    return _project_clip(path, _POOL_STATE["config"], _POOL_STATE["options"])


def pool_run(corpus: BenchmarkCorpus, cores: int, config: FeatureConfig, repeat: int) -> Run:
    """``multiprocessing.Pool(cores)`` mapping ``extract_file`` over the corpus (pool start included)."""

    # A fork server that has imported the project forks the workers: they start as fast as forks
    # of this process would, without inheriting its sockets to Spark's JVM.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ser_udfs.features.extract_file", "threadpoolctl"])

    def work() -> int:
        with context.Pool(cores, initializer=_pool_init, initargs=(config.to_dict(),)) as pool:
            return sum(pool.imap_unordered(_pool_extract, corpus.paths, chunksize=8))

    rows, wall_s, usage = _procstat.measure(work)
    # Spark's idle JVM and workers may be alive beside the pool: count Python processes only.
    return Run(
        f"Pool({cores}) extract_file", cores, len(corpus.paths), corpus.audio_seconds, wall_s,
        usage.cpu_s_by_kind.get("python", 0.0), repeat, {"python": usage.peak_rss_bytes.get("python", 0)},
        {"feature_rows": rows},
    )


# --------------------------------------------------------------------------------------------
# The Spark job


def start_spark(cores: int, spark_conf: dict[str, str]):
    """A ``local[cores]`` session (stopping another master's); returns it and the seconds it took."""
    from pyspark.sql import SparkSession

    from jobs._spark import build_spark

    master = f"local[{cores}]"
    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master == master:
        return active, 0.0
    if active is not None:
        active.stop()
    started = time.perf_counter()
    spark = build_spark(
        "bench-extract-throughput", {"spark.master": master, "spark.ui.showConsoleProgress": "false", **spark_conf}
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark, time.perf_counter() - started


def spark_run(
    corpus: BenchmarkCorpus, output: Path, cores: int, repeat: int, *, label: str = "", overrides: Sequence[str] = ()
) -> Run:
    """Run ``jobs.extract_features`` on the corpus and remove its output afterwards."""
    import json

    from jobs import extract_features

    argv = ["--input", str(corpus.root), "--output", str(output), "--log-level", "WARNING"]
    for override in overrides:
        argv += ["--set", override]
    status, wall_s, usage = _procstat.measure(lambda: extract_features.main(argv))
    if status != 0:
        raise RuntimeError(f"the extraction job failed with status {status}")
    manifest = json.loads((output / "_manifest.json").read_text())
    shutil.rmtree(output, ignore_errors=True)
    name = f"Spark local[{cores}] job" + (f" ({label})" if label else "")
    return Run(
        name, cores, len(corpus.paths), corpus.audio_seconds, wall_s, usage.cpu_s, repeat, usage.peak_rss_bytes,
        {
            "feature_rows": manifest["counts"]["feature_rows"],
            "partitions": manifest["spark"]["partitions"],
            "writer": manifest.get("writer", "spark"),
            "peak_workers": usage.peak_worker_count,
            "cpu_s_by_kind": usage.cpu_s_by_kind,
        },
    )


# --------------------------------------------------------------------------------------------
# Reporting


def machine_lines(spark_version: str | None) -> list[str]:
    """One line each: CPU, cores, memory, load, software versions."""
    import librosa
    import pyarrow
    import scipy

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        memory = f"{memory_kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"CPU: {model}; {os.cpu_count()} logical cores, {usable} usable; memory {memory}",
        f"load average (1/5/15 min) at start: {load}",
        f"Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
        f"librosa {librosa.__version__}, PyArrow {pyarrow.__version__}, PySpark {spark_version or 'not started'}",
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _mib(value: int | None) -> str:
    return f"{value / 2**20:.0f}" if value else "-"


def per_core_table(runs: Sequence[Run]) -> str:
    report, project = runs
    rows = []
    for run in runs:
        rows.append([
            run.pipeline, run.clips, f"{run.cpu_ms_per_clip:.2f}", f"{run.clips / run.cpu_s:.0f}",
            f"{run.audio_s / run.cpu_s:.0f}", f"{run.clips_per_s:.0f}", f"{report.cpu_s / run.cpu_s:.2f}x",
        ])
    return _table(
        ["pipeline (1 process, 1 thread)", "clips", "CPU ms/clip", "clips/s per core", "audio-s/s per core",
         "clips/s (wall)", "speed vs report (CPU)"],
        rows,
    )


def throughput_table(runs: Sequence[Run]) -> str:
    pools = {(run.cores, run.repeat): run for run in runs if run.pipeline.startswith("Pool")}
    rows = []
    for run in runs:
        pool = pools.get((run.cores, run.repeat))
        ratio = f"{run.clips_per_s / pool.clips_per_s:.2f}" if pool is not None else "-"
        cpu_ratio = f"{pool.cpu_s / run.cpu_s:.2f}" if pool is not None and run.cpu_s > 0 else "-"
        by_kind = run.details.get("cpu_s_by_kind", {})
        split = " / ".join(
            f"{1e3 * by_kind.get(kind, 0.0) / run.clips:.2f}" for kind in ("python_worker", "jvm", "python")
        ) if "jvm" in by_kind else "-"
        rows.append([
            run.pipeline, run.repeat + 1, run.clips, f"{run.wall_s:.1f}", f"{run.clips_per_s:.0f}",
            f"{run.audio_s_per_s_per_core:.0f}", f"{run.cpu_ms_per_clip:.2f}", split, ratio, cpu_ratio,
            _mib(run.peak_rss.get("jvm")), _mib(run.peak_rss.get("python_worker", run.peak_rss.get("python"))),
        ])
    return _table(
        ["pipeline", "run", "clips", "wall s", "clips/s", "audio-s/s per core", "CPU ms/clip",
         "of which workers / JVM / driver", "clips/s vs Pool", "CPU vs Pool", "JVM peak MiB",
         "largest Python process MiB"],
        rows,
    )


def summary_lines(runs: Sequence[Run]) -> list[str]:
    """Median ratio of each Spark configuration to the Pool on the same cores."""
    lines = []
    for cores in sorted({run.cores for run in runs}):
        pools = {run.repeat: run for run in runs if run.cores == cores and run.pipeline.startswith("Pool")}
        for name in dict.fromkeys(run.pipeline for run in runs if run.cores == cores and run.pipeline.startswith("Spark")):
            ratios = [
                run.clips_per_s / pools[run.repeat].clips_per_s
                for run in runs
                if run.pipeline == name and run.repeat in pools
            ]
            if ratios:
                lines.append(f"{name}: {median(ratios):.2f}x the Pool's clips/s on {cores} core(s) (median of {len(ratios)})")
    scaling = {
        run.cores: run.clips_per_s for run in runs if run.pipeline.startswith("Spark") and not run.pipeline.endswith(")")
    }
    if len(scaling) > 1:
        low, high = min(scaling), max(scaling)
        lines.append(
            f"Spark scaling {low} -> {high} cores: {scaling[high] / scaling[low]:.2f}x clips/s (ideal {high / low:.0f}x)"
        )
    return lines


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=5000, help="files in the throughput runs (default 5000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIPS} clips, fewer per-core clips")
    parser.add_argument("--cores", default=str(len(os.sched_getaffinity(0))), help="comma-separated core counts")
    parser.add_argument("--repeats", type=int, default=1, help="Pool/Spark pairs per core count (alternating)")
    parser.add_argument("--per-core-clips", type=int, default=600, help="clips timed one by one per pipeline")
    parser.add_argument("--equivalence-clips", type=int, default=20, help="clips compared with librosa")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of source clips")
    parser.add_argument("--sample-rate", type=int, default=48000, help="rate of the generated WAV files, Hz")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[;KEY=VALUE]",
        help="also run the job with these --set overrides, e.g. jvm-writer:output.writer=spark",
    )
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE", help="Spark setting")
    parser.add_argument(
        "--warmup-clips", type=int, default=100,
        help="clips of an untimed extraction job run after each Spark start (0: time the cold first job)",
    )
    parser.add_argument("--memory-clips", default="", help="comma-separated input sizes for Spark's memory check")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: per-core, equivalence, pool, spark")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips = min(args.clips, QUICK_CLIPS)
        args.per_core_clips = min(args.per_core_clips, 100)
        args.equivalence_clips = min(args.equivalence_clips, 5)
        args.warmup_clips = min(args.warmup_clips, 20)
    return args


def _variants(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    variants = []
    for spec in specs:
        label, sep, overrides = spec.partition(":")
        if not sep or not overrides:
            raise SystemExit(f"--variant {spec!r}: expected LABEL:KEY=VALUE[;KEY=VALUE]")
        variants.append((label, overrides.split(";")))
    return variants


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    skip = {step.strip() for step in args.skip.split(",") if step.strip()}
    core_counts = [int(c) for c in args.cores.split(",")]
    memory_sizes = [int(c) for c in args.memory_clips.split(",") if c.strip()]
    variants = _variants(args.variant)
    spark_conf = dict(item.split("=", 1) for item in args.spark_conf)
    config = FeatureConfig()
    scratch = Path(tempfile.mkdtemp(prefix="ser-bench-")) if args.work_dir is None else args.work_dir
    scratch.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    try:
        started = time.perf_counter()
        largest = max([args.clips, *memory_sizes])
        masters = prepare_masters(args.source, scratch, sample_rate=args.sample_rate, limit=largest)
        corpus = replicate(masters, scratch / "clips", args.clips)
        log.info("input ready in %.1f s: %d files in %s", time.perf_counter() - started, args.clips, corpus.root)
        _print_machine(corpus, args.source, out)
        if "per-core" not in skip:
            _print_per_core(corpus, args.per_core_clips, config, out)
        if "equivalence" not in skip:
            _print_equivalence(corpus, args.equivalence_clips, config, out)
        spark = _print_throughput(args, corpus, masters, scratch, core_counts, variants, spark_conf, skip, config, out)
        if memory_sizes and "spark" not in skip:
            spark = _print_memory(masters, scratch, memory_sizes, core_counts[-1], spark_conf, out)
        load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
        version = spark.version if spark is not None else None
        print(f"- load average at the end: {load}; PySpark {version or 'not used'}", file=out)
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _print_machine(corpus: BenchmarkCorpus, source: Any, out: Any) -> None:
    print("## Machine\n", file=out)
    print("\n".join(f"- {line}" for line in machine_lines(None)), file=out)
    print(
        f"- input: {len(corpus.paths)} files ({corpus.distinct_files} distinct, hard-linked) from {source}, "
        f"{corpus.sample_rate} Hz 16-bit WAV, {corpus.audio_seconds / len(corpus.paths):.2f} s each on average\n",
        file=out,
    )


def _print_per_core(corpus: BenchmarkCorpus, clips: int, config: FeatureConfig, out: Any) -> None:
    subset = list(corpus.paths[: min(clips, len(corpus.paths))])
    seconds = corpus.audio_seconds * len(subset) / len(corpus.paths)
    runs = per_core_speed(subset, seconds, config)
    print("## Per core: the report's per-clip code against the project's\n", file=out)
    print(per_core_table(runs) + "\n", file=out)


def _print_equivalence(corpus: BenchmarkCorpus, clips: int, config: FeatureConfig, out: Any) -> None:
    deviations = compare_with_librosa(list(masters_paths(corpus, clips)), config)
    print(f"## Equivalence with librosa ({clips} clips)\n", file=out)
    print(
        _table(
            ["quantity", "max |project - librosa|", "tolerance", "unit", "within"],
            [[d.name, f"{d.max_abs:.2e}", f"{d.tolerance:.0e}", d.unit, "yes" if d.ok else "NO"] for d in deviations],
        ) + "\n",
        file=out,
    )


def _print_throughput(
    args: argparse.Namespace,
    corpus: BenchmarkCorpus,
    masters: Masters,
    scratch: Path,
    core_counts: Sequence[int],
    variants: Sequence[tuple[str, list[str]]],
    spark_conf: dict[str, str],
    skip: set[str],
    config: FeatureConfig,
    out: Any,
) -> Any:
    """Time the Pool and the Spark job on each core count; returns the last Spark session (or None)."""
    runs: list[Run] = []
    jvm_start: dict[int, float] = {}
    spark = None
    warmup = replicate(masters, scratch / "warmup", args.warmup_clips) if args.warmup_clips else None
    warmup_s: dict[int, float] = {}
    for cores in core_counts:
        if "spark" not in skip:
            spark, jvm_start[cores] = start_spark(cores, spark_conf)
            log.info("Spark local[%d] started in %.1f s", cores, jvm_start[cores])
            if warmup is not None:
                warmup_s[cores] = spark_run(warmup, scratch / "spark-out", cores, 0).wall_s
                log.info("warm-up job (%d clips): %.1f s", args.warmup_clips, warmup_s[cores])
        for repeat in range(args.repeats):
            if "pool" not in skip:
                runs.append(pool_run(corpus, cores, config, repeat))
                log.info("%s: %.0f clips/s", runs[-1].pipeline, runs[-1].clips_per_s)
            if "spark" not in skip:
                for label, overrides in [("", []), *variants]:
                    runs.append(spark_run(corpus, scratch / "spark-out", cores, repeat, label=label, overrides=overrides))
                    log.info("%s: %.0f clips/s", runs[-1].pipeline, runs[-1].clips_per_s)
    if runs:
        print(f"## Throughput on {', '.join(map(str, core_counts))} core(s), {args.clips} clips\n", file=out)
        print(throughput_table(runs) + "\n", file=out)
        for cores, seconds in jvm_start.items():
            print(
                f"- Spark session start (local[{cores}]; only the first start launches the JVM), "
                f"not in the job's time: {seconds:.1f} s", file=out,
            )
        for cores, seconds in warmup_s.items():
            print(
                f"- warm-up job before the timed ones (local[{cores}], {args.warmup_clips} clips: JIT, Python "
                f"workers' start and imports): {seconds:.1f} s",
                file=out,
            )
        for line in summary_lines(runs):
            print(f"- {line}", file=out)
        print(file=out)
    return spark


def _print_memory(
    masters: Masters, scratch: Path, sizes: Sequence[int], cores: int, spark_conf: dict[str, str], out: Any
) -> Any:
    """Peak memory of the Spark job for each input size; returns the Spark session."""
    spark, _ = start_spark(cores, spark_conf)
    memory_runs = []
    for size in sizes:
        sized = replicate(masters, scratch / f"clips-{size}", size)
        memory_runs.append(spark_run(sized, scratch / "spark-out", cores, 0))
        shutil.rmtree(sized.root, ignore_errors=True)
        log.info("memory check: %d clips done", size)
    print(f"## Spark memory against input size (local[{cores}])\n", file=out)
    print(
        _table(
            ["clips", "wall s", "clips/s", "JVM peak MiB", "largest Python worker MiB", "all processes peak MiB"],
            [[run.clips, f"{run.wall_s:.1f}", f"{run.clips_per_s:.0f}", _mib(run.peak_rss.get("jvm")),
              _mib(run.peak_rss.get("python_worker")), _mib(run.peak_rss.get("total"))] for run in memory_runs],
        ) + "\n",
        file=out,
    )
    return spark


def masters_paths(corpus: BenchmarkCorpus, count: int) -> list[str]:
    """The first ``count`` distinct files of the corpus."""
    return list(corpus.paths[: min(count, corpus.distinct_files)])


if __name__ == "__main__":
    sys.exit(main())
