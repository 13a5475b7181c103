"""Listing input files and committing job outputs on any Hadoop-compatible file system.

Outputs follow one protocol so that a run that died half way never looks complete and a run
that fails leaves the previous output as it was: one run at a time holds the output's lock
(``_lock.json``), tables are written to a hidden staging folder, and only then are the old
``_SUCCESS`` marker and ``_manifest.json`` removed, the tables moved into place, and
``_manifest.json`` then ``_SUCCESS`` moved in last.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import unquote

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ser_udfs.audio.decode import AUDIO_EXTENSIONS
from ser_udfs.errors import UserError
from ser_udfs.spark.listing import (
    HEADERLESS_EXTENSIONS, HEADERLESS_MESSAGE, hadoop_can_address, local_path, walk_local,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
LOCK_NAME = "_lock.json"
STAGING_PREFIX = "_staging-"
#: A lock whose owner cannot be checked (a run on another host) is taken over after this long.
DEFAULT_LOCK_STALE_S = 24 * 3600.0


def list_files(
    spark: SparkSession, inputs: Sequence[str], *, with_content: bool = False, with_stats: bool = False
) -> DataFrame:
    """All files under ``inputs`` (directories, globs or URIs), recursively, empty ones included.

    Returns a DataFrame with ``path`` (the URI as Spark's file index spells it, ``file:/a%20b``),
    ``content`` (the bytes when ``with_content``, else null: then Spark only lists the files),
    ``listing_error`` (null for files; for an entry that could not be listed, the reason), and
    with ``with_stats`` each file's ``size`` and ``modification_time_ms`` (null otherwise, and
    for a file a remote scan does not return: Spark's file scans skip empty files).
    Local inputs are walked by :func:`ser_udfs.spark.listing.walk_local` (link loops, broken
    links and unreadable folders become ``listing_error`` rows); other schemes use Spark's file
    index, which, unlike Spark's file scans, keeps zero-length files.

    A local file whose name Hadoop cannot address (a ``:`` in it, bytes that are not UTF-8:
    :func:`ser_udfs.spark.listing.hadoop_can_address`) is never handed to Spark, even with
    ``with_content``: its ``content`` stays null and the workers open it by its local path,
    so that one such name neither fails the job nor changes its tables.
    """
    reader = spark.read.format("binaryFile")
    local = [local_path(uri) for uri in inputs]
    all_local = all(path is not None for path in local)
    if all_local:
        listing = walk_local([path for path in local if path is not None])
        names = {uri: local_path(uri) or uri for uri in listing.files}
        addressable = {uri: name for uri, name in names.items() if hadoop_can_address(name)}
        if with_content and len(addressable) < len(names):
            log.info(
                "%d files whose names Hadoop cannot address (':' or bytes that are not UTF-8) are read by the "
                "Python workers from their local paths", len(names) - len(addressable),
            )
        rows = [(uri, "file:" + addressable[uri] if uri in addressable else None, None,
                 *(_local_stats(names[uri]) if with_stats else (None, None))) for uri in listing.files]
        rows += [(problem.uri, None, problem.message, None, None) for problem in listing.problems]
        escaped = [re.sub(r"([\\{}\[\]*?])", r"\\\1", name) for name in addressable.values()]
        scanned = reader.load(escaped) if with_content and escaped else None
    else:
        try:
            scanned = reader.option("recursiveFileLookup", "true").load(list(inputs))
        except AnalysisException as exc:
            raise UserError(f"cannot read input {', '.join(inputs)}: {exc.getMessage().splitlines()[0]}") from None
        rows = [(_scan_style(uri), unquote(_scan_style(uri)), None, None, None) for uri in scanned.inputFiles()]
    frame = spark.createDataFrame(
        rows, "path string, scan_path string, listing_error string, size bigint, modification_time_ms bigint"
    )
    # File scans spell paths unescaped (file:/a b), the file index escaped (file:/a%20b).
    if with_stats and scanned is not None and not all_local:
        stats = scanned.select(F.col("path").alias("scan_path"), F.col("length").alias("scanned_size"),
                               F.unix_millis("modificationTime").alias("scanned_mtime"))
        frame = frame.join(stats, "scan_path", "left").select(
            "path", "scan_path", "listing_error", F.col("scanned_size").alias("size"),
            F.col("scanned_mtime").alias("modification_time_ms"),
        )
    columns = ["path", "content", "listing_error", "size", "modification_time_ms"]
    if with_content and scanned is not None:
        content = scanned.select(F.col("path").alias("scan_path"), "content")
        return frame.join(content, "scan_path", "left").select(*columns)
    return frame.withColumn("content", F.lit(None).cast("binary")).select(*columns)


def file_stats(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    """``path, size, modification_time_ms`` of the files ``uris`` (spelled as the listing spells
    them): local files from the file system, others from a Spark scan of their metadata (a file the
    scan skips, an empty or a missing one, gets nulls)."""
    schema = "path string, size bigint, modification_time_ms bigint"
    rows = [(uri, *_local_stats(local_path(uri))) for uri in uris if local_path(uri) is not None]
    frame = spark.createDataFrame(rows, schema)
    remote = [uri for uri in uris if local_path(uri) is None]
    if remote:
        try:
            scanned = spark.read.format("binaryFile").load(remote).select(
                F.col("path").alias("scan_path"), F.col("length").alias("size"),
                F.unix_millis("modificationTime").alias("modification_time_ms"))
        except AnalysisException as exc:
            log.warning("cannot read the sizes of %d files (%s): an incremental run will not notice them change", len(remote),
                        exc.getMessage().splitlines()[0])
        else:
            named = spark.createDataFrame([(uri, unquote(_scan_style(uri))) for uri in remote], "path string, scan_path string")
            frame = frame.unionByName(named.join(scanned, "scan_path", "left").drop("scan_path"))
    return frame


def _local_stats(path: str) -> tuple[int | None, int | None]:
    """Size and modification time (ms) of a local file; None when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None, None
    return status.st_size, status.st_mtime_ns // 1_000_000


def spark_reads_content(read_mode: str, inputs: Sequence[str]) -> bool:
    """Whether Spark should read the files' bytes: ``read.mode=spark``, or ``auto`` with a non-local input.

    Otherwise the Python workers open each file by its local path.
    """
    return read_mode == "spark" or (read_mode == "auto" and any(local_path(uri) is None for uri in inputs))


def _scan_style(uri: str) -> str:
    """``file:///a/b`` (file index) → ``file:/a/b`` (file scans); other URIs unchanged."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def audio_files(listed: DataFrame) -> DataFrame:
    """Keep the files whose name ends in an audio extension (any case), and the listing errors.

    What both jobs take as their inputs: files named as audio libsndfile reads
    (:data:`~ser_udfs.audio.decode.AUDIO_EXTENSIONS`), files named as headerless audio
    (:data:`~ser_udfs.spark.listing.HEADERLESS_EXTENSIONS`), which get the ``listing_error``
    :data:`~ser_udfs.spark.listing.HEADERLESS_MESSAGE` (an ``unsupported`` errors row, never
    read), and every entry that could not be listed. Other files (notes, CSV tables) are no inputs.
    """
    def ending(extensions: Sequence[str]) -> str:
        return r"(?i)(" + "|".join(ext.replace(".", r"\.") for ext in extensions) + r")$"

    headerless = F.col("listing_error").isNull() & F.col("path").rlike(ending(HEADERLESS_EXTENSIONS))
    return listed.where(
        F.col("path").rlike(ending(AUDIO_EXTENSIONS)) | headerless | F.col("listing_error").isNotNull()
    ).withColumn("listing_error", F.when(headerless, F.lit(HEADERLESS_MESSAGE)).otherwise(F.col("listing_error")))


def keep_received_files(staging_dir: str, received: Iterable[str]) -> list[str]:
    """Delete every file under the local ``staging_dir`` that is not in ``received``.

    The workers of :func:`ser_udfs.spark.extract.make_extract_write_fn` write their files
    straight into the staging folder; only the attempts that Spark counted as successful
    report theirs. Files of failed, killed or duplicate (speculative) attempts, finished or
    hidden half-written ones, are removed here before the folder is moved into place.

    Returns
    -------
    The removed files, relative to ``staging_dir``.
    """
    keep = {os.path.normpath(name) for name in received}
    removed = []
    for folder, _, names in os.walk(staging_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), staging_dir)
            if relative not in keep:
                os.remove(os.path.join(folder, name))
                removed.append(relative)
    if removed:
        log.info("removed %d files of failed or duplicate task attempts from %s", len(removed), staging_dir)
    return sorted(removed)


class OutputDir:
    """One job output folder on a Hadoop-compatible file system, reached through the JVM.

    A run writes an output only inside :meth:`writing` (which holds the output's lock) and
    finishes it with :meth:`publish`.
    """

    def __init__(self, spark: SparkSession, uri: str) -> None:
        self.spark = spark
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        try:
            self._root = jvm.org.apache.hadoop.fs.Path(uri)
            self._fs = self._root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        except Py4JJavaError as exc:
            message = exc.java_exception.getMessage() or exc.java_exception.toString()
            raise UserError(f"cannot use {uri}: {message.splitlines()[0]}; give a local path or a reachable URI") from None
        self.uri = self._fs.makeQualified(self._root).toString()
        self._lock_owner: dict[str, Any] | None = None

    def _path(self, name: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(self._root, name)

    def child(self, name: str) -> str:
        """URI of ``name`` inside the output."""
        return self._fs.makeQualified(self._path(name)).toString()

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists inside the output."""
        return bool(self._fs.exists(self._path(name)))

    def delete(self, name: str) -> None:
        """Remove ``name`` (recursively) if it exists."""
        self._fs.delete(self._path(name), True)

    @contextmanager
    def writing(self, job: str, *, stale_after_s: float = DEFAULT_LOCK_STALE_S) -> Iterator[str]:
        """Hold the output's lock while a run writes; yields the URI of the run's staging folder.

        The lock (``_lock.json``: job, run id, host, pid, start time) is created atomically; a
        second run is refused with a :class:`UserError` while the owner lives. A lock whose
        owner is no longer running on this host, or that is older than ``stale_after_s``, is
        taken over with a warning. Then the staging folders of earlier runs, all dead since
        none holds the lock, are removed. The finished output, if any, is left as it is until
        :meth:`publish`. On leaving, normally or by an exception, the staging folder is
        removed, the lock released, and an output folder this run created and left empty is
        removed too.
        """
        created = not self._fs.exists(self._root)
        self._fs.mkdirs(self._root)
        try:
            owner = self._take_lock(job, stale_after_s)
        except BaseException:
            if created:
                self._remove_if_empty()
            raise
        staging = self.child(STAGING_PREFIX + owner["run_id"])
        try:
            for status in self._fs.listStatus(self._root):
                if status.getPath().getName().startswith(STAGING_PREFIX):
                    log.info("removing %s, left by a run that is no longer writing", status.getPath().toString())
                    self._fs.delete(status.getPath(), True)
            yield staging
        finally:
            self._fs.delete(self._jvm.org.apache.hadoop.fs.Path(staging), True)
            self._release_lock(owner)
            if created:
                self._remove_if_empty()

    def _take_lock(self, job: str, stale_after_s: float) -> dict[str, Any]:
        """Create ``_lock.json`` for this run, taking over a stale one; refuse a live one."""
        started_s = time.time()
        owner = {
            "job": job, "run_id": uuid.uuid4().hex[:12], "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()), "started_s": started_s,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started_s)),
        }
        for _ in range(3):
            if self._create_new(LOCK_NAME, json.dumps(owner, indent=2) + "\n"):
                self._lock_owner = owner
                return owner
            held = self._read_lock()
            if held is None:
                continue  # released meanwhile
            stale = _stale_reason(held, stale_after_s)
            holder = (
                f"{held.get('job', 'a job')} (pid {held.get('pid')} on {held.get('host')}, "
                f"started {held.get('started', 'at an unknown time')})"
            )
            if stale is None:
                raise UserError(
                    f"{self.uri} is being written by another run, {holder}; wait for it to finish, "
                    f"or, if that run is dead, delete {self.child(LOCK_NAME)}"
                )
            log.warning("taking over the lock of %s from %s: %s", self.uri, holder, stale)
            self.delete(LOCK_NAME)
        raise UserError(f"{self.uri} is being claimed by other runs at the same moment; run one job at a time")

    def _create_new(self, name: str, text: str) -> bool:
        """Create ``name`` holding ``text`` unless it exists, atomically: False when it exists.

        Locally the file is written aside and hard-linked into place; elsewhere it is renamed
        into place, which HDFS refuses over an existing file (object stores have no atomic
        rename: there the lock only narrows the window).
        """
        aside = f"{name}.{uuid.uuid4().hex[:12]}.tmp"
        local = local_path(self.uri)
        if local is not None:
            aside_path = os.path.join(local, aside)
            try:
                with open(aside_path, "w", encoding="utf-8") as stream:
                    stream.write(text)
                os.link(aside_path, os.path.join(local, name))
                return True
            except FileExistsError:
                return False
            finally:
                if os.path.lexists(aside_path):
                    os.remove(aside_path)
        self.write_text(aside, text)
        if self.exists(name) or not self._fs.rename(self._path(aside), self._path(name)):
            self.delete(aside)
            return False
        return True

    def _read_lock(self) -> dict[str, Any] | None:
        """The lock's owner; None when there is no lock, ``{}`` when it cannot be parsed."""
        try:
            text = self.read_text(LOCK_NAME)
        except Py4JJavaError:
            return None if not self.exists(LOCK_NAME) else {}
        try:
            held = json.loads(text)
        except ValueError:
            return {}
        return held if isinstance(held, dict) else {}

    def _release_lock(self, owner: dict[str, Any]) -> None:
        """Remove the lock if this run still holds it."""
        held = self._read_lock()
        if held is not None and held.get("run_id") == owner["run_id"]:
            self.delete(LOCK_NAME)
        elif held is not None:
            log.warning("%s: the lock was taken over by pid %s on %s; left to it", self.uri, held.get("pid"), held.get("host"))
        self._lock_owner = None

    def _remove_if_empty(self) -> None:
        if self._fs.exists(self._root) and not self._fs.listStatus(self._root):
            self._fs.delete(self._root, False)

    @property
    def run_id(self) -> str:
        """The id of the run holding the lock (inside :meth:`writing`)."""
        if self._lock_owner is None:
            raise RuntimeError("run_id is only known inside OutputDir.writing")
        return str(self._lock_owner["run_id"])

    def check_lock_held(self) -> None:
        """Refuse to commit when another run took the lock over while this one wrote."""
        held = self._read_lock()
        if self._lock_owner is None or held is None or held.get("run_id") != self._lock_owner["run_id"]:
            raise UserError(
                f"{self.uri} was taken over by another run while this one wrote (its lock was older than "
                "--lock-stale-h); nothing of this run was committed"
            )

    def list_names(self, name: str) -> list[str]:
        """Names of the entries of the folder ``name`` inside the output (none when it is missing)."""
        if not self.exists(name):
            return []
        return sorted(status.getPath().getName() for status in self._fs.listStatus(self._path(name)))

    def rename(self, name: str, new_name: str) -> None:
        """Rename ``name`` to ``new_name``, both inside the output (one rename: atomic locally and on HDFS)."""
        self.rename_from(self.child(name), new_name)

    def rename_from(self, uri: str, name: str) -> None:
        """Rename ``uri`` (on the output's file system) to ``name`` inside the output, which must not exist."""
        self._fs.mkdirs(self._path(name).getParent())
        if not self._fs.rename(self._jvm.org.apache.hadoop.fs.Path(uri), self._path(name)):
            raise RuntimeError(f"could not move {uri} to {self.child(name)}")

    def move_into_place(self, staged_uri: str, name: str) -> None:
        """Replace ``name`` (a folder or a file, perhaps in a subfolder) with ``staged_uri``."""
        self.delete(name)
        self.rename_from(staged_uri, name)

    def write_text(self, name: str, text: str) -> None:
        """Write a small text file inside the output (overwriting)."""
        self.write_bytes(name, text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a small binary file (a plot) inside the output (overwriting)."""
        stream = self._fs.create(self._path(name), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def read_text(self, name: str) -> str:
        """Read a small text file inside the output."""
        stream = self._fs.open(self._path(name))
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            return "\n".join(iter(reader.readLine, None))
        finally:
            stream.close()

    def publish(self, staging: str, names: Sequence[str], manifest: dict[str, Any]) -> None:
        """Replace ``names`` with their staged versions and mark the output finished.

        Call inside :meth:`writing`, once everything is in ``staging``. The manifest and
        ``_SUCCESS`` are written into ``staging`` too, so what follows only deletes and renames
        (a full disk cannot stop it half way): ``_SUCCESS`` and ``_manifest.json`` go first, each
        name is moved into place (or deleted when it was not staged), then ``_manifest.json`` and
        ``_SUCCESS`` last. Refuses when another run took the lock over meanwhile.
        """
        self.check_lock_held()
        staged = OutputDir(self.spark, staging)
        staged.write_text(MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        staged.write_text(SUCCESS_NAME, "")
        self.delete(SUCCESS_NAME)
        self.delete(MANIFEST_NAME)
        for name in names:
            if staged.exists(name):
                self.move_into_place(staged.child(name), name)
            else:
                self.delete(name)
        self.move_into_place(staged.child(MANIFEST_NAME), MANIFEST_NAME)
        self.move_into_place(staged.child(SUCCESS_NAME), SUCCESS_NAME)
        log.info("committed %s", self.uri)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), to tell a reused pid; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stale_reason(held: dict[str, Any], stale_after_s: float) -> str | None:
    """Why a lock held by ``held`` can be taken over, or None while its owner may still be writing.

    On this host the owner's pid (and its start time, against a reused pid) decides; a lock of
    another host, whose owner cannot be checked, is stale once older than ``stale_after_s``.
    """
    if not held:
        return "the lock file cannot be read"
    try:
        pid, started_s = int(held.get("pid", -1)), float(held.get("started_s", 0.0))
    except (TypeError, ValueError):
        return "the lock file cannot be read"
    if held.get("host") == socket.gethostname():
        try:
            if pid <= 0:
                return "it names no process"
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"process {pid} is no longer running"
        except PermissionError:
            pass  # alive, another user's
        started, now = held.get("pid_start"), _process_start(pid)
        if started is not None and now is not None and started != now:
            return f"process {pid} is no longer running (the pid belongs to another process now)"
        return None  # alive here: never taken over, however long it runs
    age_s = time.time() - started_s
    if age_s > stale_after_s:
        return f"it is {age_s / 3600:.1f} h old, more than {stale_after_s / 3600:g} h (--lock-stale-h)"
    return None


def read_manifest_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    """The ``_manifest.json`` of a finished output; refuses an output without ``_SUCCESS``."""
    output = OutputDir(spark, uri)
    if not output.exists(SUCCESS_NAME) or not output.exists(MANIFEST_NAME):
        raise UserError(
            f"{uri} is not a finished output (no {SUCCESS_NAME} or {MANIFEST_NAME}); rerun the job that writes it"
        )
    return json.loads(output.read_text(MANIFEST_NAME))
