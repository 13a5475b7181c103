"""CPU time and peak memory of a process tree, sampled from ``/proc`` (Linux).

Wall-clock throughput on a shared machine moves with whatever else runs; the CPU seconds that
a pipeline's own processes burn per clip do not, so the benchmark prints both. A
:class:`TreeSampler` follows the benchmark process and all its descendants (the Pool workers;
Spark's JVM, its Python daemon and workers), keeping each process' latest CPU time and the peak
resident memory per kind of process.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def available() -> bool:
    """Whether ``/proc`` can be read (Linux)."""
    return (_PROC / str(os.getpid()) / "stat").exists()


@dataclass(frozen=True)
class ProcessSample:
    """One process at one moment."""

    pid: int
    parent: int
    kind: str
    cpu_s: float
    rss_bytes: int


def _read_sample(pid: int) -> ProcessSample | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        statm = (_PROC / str(pid) / "statm").read_text().split()
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; everything after its closing ")" is split.
    fields = stat[stat.rindex(")") + 2 :].split()
    parent = int(fields[1])
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return ProcessSample(
        pid=pid,
        parent=parent,
        kind=_kind(cmdline),
        cpu_s=(user_ticks + system_ticks) / _TICKS_PER_S,
        rss_bytes=int(statm[1]) * _PAGE_BYTES,
    )


def _kind(cmdline: bytes) -> str:
    words = cmdline.split(b"\0")
    program = os.path.basename(words[0].decode(errors="replace")) if words and words[0] else ""
    if program == "java":
        return "jvm"
    if b"pyspark.daemon" in cmdline:
        return "python_worker"
    if program.startswith("python"):
        return "python"
    return "other"


def tree_samples(root: int) -> list[ProcessSample]:
    """``root`` and all its live descendants."""
    samples = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            sample = _read_sample(int(entry.name))
            if sample is not None:
                samples[sample.pid] = sample
    members = {root}
    changed = True
    while changed:
        changed = False
        for sample in samples.values():
            if sample.parent in members and sample.pid not in members:
                members.add(sample.pid)
                changed = True
    return [samples[pid] for pid in members if pid in samples]


@dataclass
class TreeUsage:
    """What a :class:`TreeSampler` saw between ``start`` and ``stop``."""

    cpu_s: float = 0.0
    cpu_s_by_kind: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    peak_worker_count: int = 0


class TreeSampler:
    """Samples a process tree in a background thread.

    CPU time counts from the moment of :meth:`start`; a process that exits between two samples
    loses at most one interval of CPU. ``peak_rss_bytes["python_worker"]`` is the largest single
    worker, ``"jvm"`` the JVM, ``"total"`` the largest sum over the whole tree.
    """

    def __init__(self, root: int | None = None, *, interval_s: float = 0.2) -> None:
        self.root = os.getpid() if root is None else root
        self.interval_s = interval_s
        self._baseline: dict[int, float] = {}
        self._latest: dict[int, float] = {}
        self._kinds: dict[int, str] = {}
        self._usage = TreeUsage()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        samples = tree_samples(self.root)
        peaks = self._usage.peak_rss_bytes
        workers = 0
        first = not self._latest
        for sample in samples:
            # Processes alive at start count from their CPU time then; later ones from zero.
            self._baseline.setdefault(sample.pid, sample.cpu_s if first else 0.0)
            self._latest[sample.pid] = sample.cpu_s
            self._kinds[sample.pid] = sample.kind
            peaks[sample.kind] = max(peaks.get(sample.kind, 0), sample.rss_bytes)
            workers += sample.kind == "python_worker"
        peaks["total"] = max(peaks.get("total", 0), sum(s.rss_bytes for s in samples))
        self._usage.peak_worker_count = max(self._usage.peak_worker_count, workers)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> "TreeSampler":
        """Take the baseline sample and start sampling."""
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TreeUsage:
        """Take a last sample and return the usage."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        by_kind: dict[str, float] = {}
        for pid, cpu_s in self._latest.items():
            kind = self._kinds[pid]
            by_kind[kind] = by_kind.get(kind, 0.0) + cpu_s - self._baseline.get(pid, 0.0)
        self._usage.cpu_s_by_kind = by_kind
        self._usage.cpu_s = sum(by_kind.values())
        return self._usage


def measure(fn, *, interval_s: float = 0.2):
    """Run ``fn()`` under a :class:`TreeSampler`; returns ``(result, wall_s, usage)``."""
    sampler = TreeSampler(interval_s=interval_s).start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        wall_s = time.perf_counter() - started
        usage = sampler.stop()
    return result, wall_s, usage
