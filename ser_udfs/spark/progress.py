"""Progress of a long job, logged at a steady pace: files done, rate, time left.

Spark's console bar counts tasks, and a task holds many files (``read.files_per_partition``:
256 for extraction). :class:`JobProgress` watches the job's tasks from the driver
(``SparkContext.statusTracker``), turns finished tasks into files (each task of the job's main
stage holds ``files / tasks`` of them) and logs a line every ``every_s`` seconds while it runs,
and one at the end. Python workers report nothing: their files count when their task ends, so a
line moves by whole tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ser_udfs.progress import Progress

log = logging.getLogger(__name__)


def tasks_done(tracker: Any, tasks: int) -> int:
    """Finished tasks of the running stage with ``tasks`` tasks (the job's main stage), or -1 when
    no such stage is running."""
    done = -1
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None and info.numTasks == tasks:
            done = max(done, info.numCompletedTasks)
    return done


class JobProgress:
    """Log the progress of ``files`` files in ``tasks`` tasks every ``every_s`` seconds, as a context manager.

    Parameters
    ----------
    spark_context
        The job's ``SparkContext``.
    what
        What the lines call the work ("extraction", "scoring").
    clock
        Seconds (tests pass their own).
    """

    def __init__(self, spark_context: Any, what: str, *, files: int, tasks: int, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tracker = spark_context.statusTracker()
        self.what, self.files, self.tasks, self.every_s = what, files, max(1, tasks), every_s
        self._clock = clock
        self._started = clock()
        self._tasks_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{what} progress", daemon=True)

    def progress(self) -> Progress:
        """Files done so far (finished tasks of the main stage, each ``files / tasks`` of them)."""
        done = tasks_done(self._tracker, self.tasks)
        self._tasks_done = max(self._tasks_done, done)
        files = min(self.files, round(self.files * self._tasks_done / self.tasks))
        return Progress(files, self.files, self._clock() - self._started)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            log.info("%s", self.progress().describe(self.what))

    def __enter__(self) -> "JobProgress":
        self._started = self._clock()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc_info[0] is None:
            log.info("%s", Progress(self.files, self.files, self._clock() - self._started).describe(self.what))
