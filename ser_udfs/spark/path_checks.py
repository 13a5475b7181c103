"""Checks on the paths a job is given, made before any work starts.

* An ``--output`` must not hold an input: a job deletes ``_staging-*`` folders and replaces its
  tables (``features``, ``errors``, ...) inside its output, which could delete input files.
* A manifest may only point at local files and at the file system it lives on (a manifest on
  ``hdfs://nn/`` may list ``hdfs://nn/...``), unless more schemes are allowed explicitly, so that
  a manifest cannot make the workers fetch ``http:`` or other unexpected URIs; and, when roots
  are given (``read.manifest_roots``), only at files under them.
"""

from __future__ import annotations

import glob
import os
import posixpath
from typing import Collection, Sequence
from urllib.parse import urlsplit

from ser_udfs.errors import UserError
from ser_udfs.spark.listing import is_glob, local_path


def scheme_of(uri: str) -> str:
    """The URI scheme in lower case; ``"file"`` for plain paths."""
    return urlsplit(uri).scheme.lower() or "file"


def _normalised(uri: str) -> str:
    local = local_path(uri)
    if local is not None:
        return "file://" + os.path.realpath(local)
    parts = urlsplit(uri)
    return f"{parts.scheme.lower()}://{parts.netloc}{posixpath.normpath(parts.path or '/')}"


def _fixed_prefix(uri: str) -> str:
    """The part of a glob pattern before its first wildcard component (an existing local path is no pattern)."""
    local = local_path(uri)
    if not glob.has_magic(uri) or (local is not None and not is_glob(local)):
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


def check_manifest_paths(
    paths: Sequence[str], *, manifest: str, extra_schemes: Collection[str] = (), roots: Sequence[str] = ()
) -> None:
    """Refuse manifest paths on file systems other than local files and the manifest's own, or outside ``roots``.

    Parameters
    ----------
    paths
        The manifest's clip paths, resolved (absolute paths or URIs), in file order.
    manifest
        Where the manifest was read from (its scheme is allowed).
    extra_schemes
        More schemes to allow (``read.manifest_schemes``).
    roots
        Folders (local paths or URIs) every path must lie in (``read.manifest_roots``); empty:
        anywhere. Local paths are compared with links resolved, so neither ``..`` nor a link
        leads out of a root.

    Raises
    ------
    UserError
        Naming the first path outside the allowed schemes or roots, and what to change.
    """
    allowed = {"file", scheme_of(manifest), *(scheme.lower() for scheme in extra_schemes)}
    allowed_roots = [_normalised(root).rstrip("/") + "/" for root in roots]
    for row, path in enumerate(paths, start=1):
        scheme = scheme_of(path)
        if scheme not in allowed:
            raise UserError(
                f"manifest {manifest}, row {row}: {path} is on '{scheme}:', but a manifest may only list "
                f"paths on {sorted(allowed)}; if that is intended, allow it with "
                f"--set 'read.manifest_schemes=[\"{scheme}\"]'"
            )
        if allowed_roots and not any(_normalised(path).startswith(root) for root in allowed_roots):
            raise UserError(
                f"manifest {manifest}, row {row}: {path} lies outside read.manifest_roots {list(roots)}; "
                "list only files under those folders, or add its folder to read.manifest_roots"
            )


def check_local_inputs_exist(flag: str, uris: Sequence[str]) -> None:
    """Refuse a local input that does not exist (a glob that matches nothing), before Spark starts.

    Remote inputs are checked by the listing, once Spark runs.
    """
    for uri in uris:
        local = local_path(uri)
        if local is None:
            continue
        found = glob.glob(local) if is_glob(local) else os.path.exists(local)
        if not found:
            raise UserError(f"{flag} {uri} does not exist{' (the pattern matches nothing)' if is_glob(local) else ''}; "
                            "check the path")

