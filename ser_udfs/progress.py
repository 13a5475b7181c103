"""How far a long piece of work has got, in words: done of total, rate, time left.

The jobs log it at a steady pace (:class:`ser_udfs.spark.progress.JobProgress` for the Spark
jobs, after each fold for training).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units (files, folds) after ``elapsed_s`` seconds."""

    done: int
    total: int
    elapsed_s: float

    def describe(self, what: str, *, unit: str = "files") -> str:
        """``"extraction: 512 of 5000 files (10%), 25.6 files/s, about 2 min 55 s left"``."""
        share = self.done / self.total if self.total else 1.0
        line = f"{what}: {self.done} of {self.total} {unit} ({share:.0%})"
        if self.done and self.elapsed_s > 0:
            rate = self.done / self.elapsed_s
            line += f", {rate:.1f} {unit}/s" if rate >= 0.1 else f", {_duration(1 / rate)} per {unit.rstrip('s')}"
            if self.done < self.total:
                line += f", about {_duration((self.total - self.done) / rate)} left"
        return line + (f", {_duration(self.elapsed_s)} in all" if self.done >= self.total else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
