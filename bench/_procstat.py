"""CPU time and peak memory of a process tree, sampled from ``/proc`` (Linux).

Wall-clock throughput on a shared machine moves with whatever else runs; the CPU seconds that
a pipeline's own processes burn per clip move much less, so the benchmark prints both. A
:class:`TreeSampler` follows the benchmark process and all its descendants (the Pool's fork
server and workers; Spark's JVM, its Python daemons and workers).

CPU accounting: a process alive at the end counts its own CPU time since the start; a process
that exited counts through its parent, whose "children" CPU time grows by the exited child's
whole CPU time when the parent reaps it (the fork server reaps the Pool's workers, PySpark's
daemon its workers). Nothing is lost between samples and nothing is counted twice. The
sampler's own CPU time (its thread in the benchmark process) is left out.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

T = TypeVar("T")


def available() -> bool:
    """Whether ``/proc`` can be read (Linux)."""
    return (_PROC / str(os.getpid()) / "stat").exists()


@dataclass(frozen=True)
class ProcessSample:
    """One process at one moment: own CPU, CPU of its reaped children, resident memory."""

    pid: int
    parent: int
    kind: str
    own_cpu_s: float
    children_cpu_s: float
    rss_bytes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its closing ")" is split.
    return stat[stat.rindex(")") + 2 :].split()


def _kind(pid: int) -> str:
    try:
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "other"
    words = cmdline.split(b"\0")
    program = os.path.basename(words[0].decode(errors="replace")) if words and words[0] else ""
    if program == "java":
        return "jvm"
    if b"pyspark.daemon" in cmdline:
        return "python_worker"
    if program.startswith("python"):
        return "python"
    return "other"


def tree_samples(root: int, kinds: dict[int, str] | None = None) -> list[ProcessSample]:
    """``root`` and all its live descendants; ``kinds`` caches each pid's kind between calls."""
    kinds = {} if kinds is None else kinds
    if not available():
        return []
    fields = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            found = _stat_fields(int(entry.name))
            if found is not None:
                fields[int(entry.name)] = found
    children: dict[int, list[int]] = {}
    for pid, values in fields.items():
        children.setdefault(int(values[1]), []).append(pid)
    members, pending = [], [root]
    while pending:
        pid = pending.pop()
        if pid in fields:
            members.append(pid)
            pending.extend(children.get(pid, []))
    samples = []
    for pid in members:
        values = fields[pid]
        if pid not in kinds:
            kinds[pid] = _kind(pid)
        samples.append(
            ProcessSample(
                pid=pid,
                parent=int(values[1]),
                kind=kinds[pid],
                own_cpu_s=(int(values[11]) + int(values[12])) / _TICKS_PER_S,
                children_cpu_s=(int(values[13]) + int(values[14])) / _TICKS_PER_S,
                rss_bytes=int(values[21]) * _PAGE_BYTES,
            )
        )
    return samples


@dataclass
class TreeUsage:
    """What a :class:`TreeSampler` saw between ``start`` and ``stop``."""

    cpu_s: float = 0.0
    cpu_s_by_kind: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    peak_worker_count: int = 0
    sampler_cpu_s: float = 0.0


class TreeSampler:
    """Samples a process tree in a background thread.

    ``cpu_s_by_kind`` attributes CPU to ``python`` (the benchmark process, a Pool's fork server
    and workers), ``jvm`` and ``python_worker`` (PySpark's daemons and workers); an exited
    process' CPU goes to its parent's kind. ``peak_rss_bytes`` holds, per kind, the largest
    single process, and under ``"total"`` the largest sum over the tree.
    """

    def __init__(self, root: int | None = None, *, interval_s: float = 0.5) -> None:
        self.root = os.getpid() if root is None else root
        self.interval_s = interval_s
        self._kinds: dict[int, str] = {}
        self._first: dict[int, ProcessSample] = {}
        self._last: dict[int, ProcessSample] = {}
        self._started_with: set[int] = set()
        self._usage = TreeUsage()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> list[ProcessSample]:
        samples = tree_samples(self.root, self._kinds)
        peaks = self._usage.peak_rss_bytes
        for sample in samples:
            self._first.setdefault(sample.pid, sample)
            self._last[sample.pid] = sample
            peaks[sample.kind] = max(peaks.get(sample.kind, 0), sample.rss_bytes)
        peaks["total"] = max(peaks.get("total", 0), sum(s.rss_bytes for s in samples))
        workers = sum(s.kind == "python_worker" for s in samples)
        self._usage.peak_worker_count = max(self._usage.peak_worker_count, workers)
        return samples

    def _loop(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self._sample()
        self._usage.sampler_cpu_s = time.thread_time() - started

    def start(self) -> "TreeSampler":
        """Take the baseline sample and start sampling."""
        self._started_with = {sample.pid for sample in self._sample()}
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TreeUsage:
        """Take a last sample and return the usage."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        alive = {sample.pid for sample in self._sample()}
        by_kind: dict[str, float] = {}
        for pid, last in self._last.items():
            first = self._first[pid]
            base_own = first.own_cpu_s if pid in self._started_with else 0.0
            base_children = first.children_cpu_s if pid in self._started_with else 0.0
            cpu_s = last.children_cpu_s - base_children + (last.own_cpu_s - base_own if pid in alive else 0.0)
            by_kind[last.kind] = by_kind.get(last.kind, 0.0) + cpu_s
        root_kind = self._last[self.root].kind if self.root in self._last else "python"
        by_kind[root_kind] = by_kind.get(root_kind, 0.0) - self._usage.sampler_cpu_s
        self._usage.cpu_s_by_kind = by_kind
        self._usage.cpu_s = sum(by_kind.values())
        return self._usage


def measure(fn: Callable[[], T], *, interval_s: float = 0.5) -> tuple[T, float, TreeUsage]:
    """Run ``fn()`` under a :class:`TreeSampler`; returns ``(result, wall_s, usage)``."""
    sampler = TreeSampler(interval_s=interval_s).start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        wall_s = time.perf_counter() - started
        usage = sampler.stop()
    return result, wall_s, usage
