"""Checks on the paths a job is given, made before any work starts.

* An ``--output`` must not hold an input: a job deletes ``_staging-*`` folders and replaces its
  tables (``features``, ``errors``, ...) inside its output, which could delete input files.
* A manifest may only point at local files and at the file system it lives on (a manifest on
  ``hdfs://nn/`` may list ``hdfs://nn/...``), unless more schemes are allowed explicitly, so that
  a manifest cannot make the workers fetch ``http:`` or other unexpected URIs.
"""

from __future__ import annotations

import glob
import os
import posixpath
from typing import Collection, Sequence
from urllib.parse import unquote, urlsplit

from ser_udfs.errors import UserError


def scheme_of(uri: str) -> str:
    """The URI scheme in lower case; ``"file"`` for plain paths."""
    return urlsplit(uri).scheme.lower() or "file"


def _normalised(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme.lower() in ("", "file"):
        local = unquote(parts.path) if parts.scheme else uri
        return "file://" + os.path.realpath(local)
    return f"{parts.scheme.lower()}://{parts.netloc}{posixpath.normpath(parts.path or '/')}"


def _fixed_prefix(uri: str) -> str:
    """The part of a glob pattern before its first wildcard component."""
    if not glob.has_magic(uri):
        return uri
    parts = uri.split("/")
    return "/".join(parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))]) or "/"


def check_output_apart(output: str, inputs: Sequence[str]) -> None:
    """Refuse an ``output`` that is one of ``inputs`` or a folder above one.

    Raises
    ------
    UserError
        Naming the input that lies inside the output.
    """
    out = _normalised(output).rstrip("/")
    for given in inputs:
        inside = _normalised(_fixed_prefix(given))
        if inside == out or inside.startswith(out + "/"):
            raise UserError(
                f"--output {output} holds the input {given}; a job replaces folders inside its output, "
                "so write the output outside every input"
            )


def check_manifest_paths(paths: Sequence[str], *, manifest: str, extra_schemes: Collection[str] = ()) -> None:
    """Refuse manifest paths on file systems other than local files and the manifest's own.

    Parameters
    ----------
    paths
        The manifest's clip paths, resolved (absolute paths or URIs), in file order.
    manifest
        Where the manifest was read from (its scheme is allowed).
    extra_schemes
        More schemes to allow (``read.manifest_schemes``).

    Raises
    ------
    UserError
        Naming the first path outside the allowed schemes and how to allow it.
    """
    allowed = {"file", scheme_of(manifest), *(scheme.lower() for scheme in extra_schemes)}
    for row, path in enumerate(paths, start=1):
        scheme = scheme_of(path)
        if scheme not in allowed:
            raise UserError(
                f"manifest {manifest}, row {row}: {path} is on '{scheme}:', but a manifest may only list "
                f"paths on {sorted(allowed)}; if that is intended, allow it with "
                f"--set 'read.manifest_schemes=[\"{scheme}\"]'"
            )
