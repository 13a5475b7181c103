"""Listing input files and committing job outputs on any Hadoop-compatible file system.

Outputs follow one protocol so that a run that died half way never looks complete: the old
``_SUCCESS`` marker and ``_manifest.json`` are removed first, tables are written to a hidden
staging folder and moved into place, and ``_manifest.json`` then ``_SUCCESS`` are written last.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from typing import Any, Iterable, Sequence
from urllib.parse import unquote

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ser_udfs.audio.decode import AUDIO_EXTENSIONS
from ser_udfs.errors import UserError
from ser_udfs.spark.listing import local_path, walk_local

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"


def list_files(spark: SparkSession, inputs: Sequence[str], *, with_content: bool = False) -> DataFrame:
    """All files under ``inputs`` (directories, globs or URIs), recursively, empty ones included.

    Returns a DataFrame with ``path`` (the URI as Spark's file index spells it, ``file:/a%20b``),
    ``content`` (the bytes when ``with_content``, else null: then Spark only lists the files) and
    ``listing_error`` (null for files; for an entry that could not be listed, the reason).
    Local inputs are walked by :func:`ser_udfs.spark.listing.walk_local` (link loops, broken
    links and unreadable folders become ``listing_error`` rows); other schemes use Spark's file
    index, which, unlike Spark's file scans, keeps zero-length files.
    """
    reader = spark.read.format("binaryFile")
    local = [local_path(uri) for uri in inputs]
    if all(path is not None and "{" not in path for path in local):
        listing = walk_local([path for path in local if path is not None])
        rows = [(uri, None) for uri in listing.files] + [(p.uri, p.message) for p in listing.problems]
        escaped = [re.sub(r"([\\{}\[\]*?])", r"\\\1", unquote(uri)[len("file:"):]) for uri in listing.files]
        scanned = reader.load(escaped) if with_content and escaped else None
    else:
        try:
            scanned = reader.option("recursiveFileLookup", "true").load(list(inputs))
        except AnalysisException as exc:
            raise UserError(f"cannot read input {', '.join(inputs)}: {exc.getMessage().splitlines()[0]}") from None
        rows = [(_scan_style(uri), None) for uri in scanned.inputFiles()]
    frame = spark.createDataFrame(
        [(uri, unquote(uri), error) for uri, error in rows], "path string, scan_path string, listing_error string"
    )
    if with_content and scanned is not None:
        # File scans spell paths unescaped (file:/a b), the file index escaped (file:/a%20b).
        content = scanned.select(F.col("path").alias("scan_path"), "content")
        return frame.join(content, "scan_path", "left").select("path", "content", "listing_error")
    return frame.select("path", F.lit(None).cast("binary").alias("content"), "listing_error")


def spark_reads_content(read_mode: str, inputs: Sequence[str]) -> bool:
    """Whether Spark should read the files' bytes: ``read.mode=spark``, or ``auto`` with a non-local input.

    Otherwise the Python workers open each file by its local path.
    """
    return read_mode == "spark" or (read_mode == "auto" and any(local_path(uri) is None for uri in inputs))


def _scan_style(uri: str) -> str:
    """``file:///a/b`` (file index) → ``file:/a/b`` (file scans); other URIs unchanged."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def audio_files(listed: DataFrame) -> DataFrame:
    """Keep the files whose name ends in an audio extension (any case), and the listing errors."""
    pattern = r"(?i)(" + "|".join(ext.replace(".", r"\.") for ext in AUDIO_EXTENSIONS) + r")$"
    return listed.where(F.col("path").rlike(pattern) | F.col("listing_error").isNotNull())


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
    """One job output folder on a Hadoop-compatible file system, reached through the JVM."""

    def __init__(self, spark: SparkSession, uri: str) -> None:
        self.spark = spark
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._root = jvm.org.apache.hadoop.fs.Path(uri)
        self._fs = self._root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        self.uri = self._fs.makeQualified(self._root).toString()

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

    def begin(self) -> str:
        """Mark the output incomplete and return a fresh staging folder's URI."""
        self._fs.mkdirs(self._root)
        self.delete(SUCCESS_NAME)
        self.delete(MANIFEST_NAME)
        for status in self._fs.listStatus(self._root):
            name = status.getPath().getName()
            if name.startswith("_staging-"):
                self._fs.delete(status.getPath(), True)
        return self.child(f"_staging-{uuid.uuid4().hex[:12]}")

    def move_into_place(self, staged_uri: str, name: str) -> None:
        """Replace ``name`` with the staged folder ``staged_uri``."""
        self.delete(name)
        source = self._jvm.org.apache.hadoop.fs.Path(staged_uri)
        if not self._fs.rename(source, self._path(name)):
            raise RuntimeError(f"could not move {staged_uri} to {self.child(name)}")

    def write_text(self, name: str, text: str) -> None:
        """Write a small text file inside the output (overwriting)."""
        stream = self._fs.create(self._path(name), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

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

    def commit(self, manifest: dict[str, Any], *, cleanup: Iterable[str] = ()) -> None:
        """Write the manifest, remove staging leftovers, and write ``_SUCCESS`` last."""
        for uri in cleanup:
            self._fs.delete(self._jvm.org.apache.hadoop.fs.Path(uri), True)
        self.write_text(MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        self.write_text(SUCCESS_NAME, "")
        log.info("committed %s", self.uri)


def read_manifest_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    """The ``_manifest.json`` of a finished output; refuses an output without ``_SUCCESS``."""
    output = OutputDir(spark, uri)
    if not output.exists(SUCCESS_NAME) or not output.exists(MANIFEST_NAME):
        raise UserError(
            f"{uri} is not a finished output (no {SUCCESS_NAME} or {MANIFEST_NAME}); rerun the job that writes it"
        )
    return json.loads(output.read_text(MANIFEST_NAME))
