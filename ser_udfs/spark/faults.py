"""Fault injection for the reliability tests, switched on by environment variables.

The jobs' worker functions call :func:`fault_point` after each output batch. It does nothing
unless one of these variables is set in the Python workers' environment (inherited in local
mode; ``--conf spark.executorEnv.NAME=value`` on a cluster):

``SER_SPARK_FAIL_ONCE_PER_PARTITION=<folder>``
    The first attempt of every task raises :class:`InjectedFault` after its first output batch,
    leaving a marker file ``<where>-stage<S>-partition<P>`` in ``<folder>``. Spark then retries
    the task, so the job needs ``spark.task.maxFailures`` above 1 (``local[N,F]`` in local mode).
``SER_SPARK_TASK_DELAY_S=<seconds>``
    Every task sleeps that long after each output batch, so that a test can kill a job while
    it writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FAIL_ONCE_ENV = "SER_SPARK_FAIL_ONCE_PER_PARTITION"
DELAY_ENV = "SER_SPARK_TASK_DELAY_S"


class InjectedFault(RuntimeError):
    """The failure :func:`fault_point` raises on purpose."""


def fault_point(where: str) -> None:
    """Raise or pause here when the environment asks for it (see the module docstring).

    Parameters
    ----------
    where
        Name of the calling step, used in the marker file name and the message.
    """
    delay_s = os.environ.get(DELAY_ENV)
    if delay_s:
        time.sleep(float(delay_s))
    marker_dir = os.environ.get(FAIL_ONCE_ENV)
    if not marker_dir:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None or context.attemptNumber() > 0:
        return
    marker = Path(marker_dir) / f"{where}-stage{context.stageId()}-partition{context.partitionId()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    raise InjectedFault(f"injected failure in {where}, stage {context.stageId()} partition {context.partitionId()}")
