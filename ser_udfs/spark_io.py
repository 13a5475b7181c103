"""Listing input files and committing job outputs on any Hadoop-compatible file system.

Outputs follow one protocol so that a run that died half way never looks complete: the old
``_SUCCESS`` marker and ``_manifest.json`` are removed first, tables are written to a hidden
staging folder and moved into place, and ``_manifest.json`` then ``_SUCCESS`` are written last.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Iterable, Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ser_udfs.audio import AUDIO_EXTENSIONS
from ser_udfs.errors import UserError

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"


def list_files(spark: SparkSession, inputs: Sequence[str], *, with_content: bool = False) -> DataFrame:
    """All files under ``inputs`` (directories, globs or URIs), recursively, empty ones included.

    Returns a DataFrame with ``path`` (the URI, spelled as Spark's ``binaryFile`` spells it) and
    ``content`` (the bytes when ``with_content``, else null: then Spark only lists the files).
    Spark's file scans skip zero-length files, so the list comes from the file index instead.
    """
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    try:
        listed = reader.load(list(inputs))
    except AnalysisException as exc:
        raise UserError(f"cannot read input {', '.join(inputs)}: {exc.getMessage().splitlines()[0]}") from None
    paths = [(_scan_style(uri),) for uri in listed.inputFiles()]
    frame = spark.createDataFrame(paths, "path string")
    if with_content:
        return frame.join(listed.select("path", "content"), "path", "left")
    return frame.withColumn("content", F.lit(None).cast("binary"))


def _scan_style(uri: str) -> str:
    """``file:///a/b`` (file index) → ``file:/a/b`` (file scans); other URIs unchanged."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def audio_files(listed: DataFrame) -> DataFrame:
    """Keep the files whose name ends in an audio extension (any case)."""
    pattern = r"(?i)(" + "|".join(ext.replace(".", r"\.") for ext in AUDIO_EXTENSIONS) + r")$"
    return listed.where(F.col("path").rlike(pattern))


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
