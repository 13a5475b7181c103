"""Local paths and URIs, and listing local input folders safely (link loops, broken links, unreadable folders).

:func:`local_path` and :func:`local_uri` turn ``file:`` URIs into local paths and back, spelled as
Spark spells them.

Hadoop's local file system follows every symbolic link to a folder, so a link that points back
up the tree lists the same files again at each level (about forty times, until the kernel's
link limit stops it), and it drops broken links and unreadable folders without a word. The
jobs list local inputs with :func:`walk_local` instead: each real folder is entered once, and
whatever cannot be listed comes back as a :class:`ListingProblem` that the jobs turn into an
``errors`` row. Names are filtered like Spark's file index does (hidden ``.name`` and ``_name``
entries are skipped) and files are spelled as Spark spells them (:func:`uri_for_local_path`).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import unquote, urlparse

from ser_udfs.errors import UserError

log = logging.getLogger(__name__)

# ASCII characters java.net.URI leaves as they are in a path (letters and digits aside).
_URI_PATH_SAFE = frozenset("-_.!~*'(),;:$&+=@/")
# A path made only of those and ASCII letters and digits is its own URI path (the common case).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-_.!~*'(),;:$&+=@/]*\Z")


@dataclass(frozen=True)
class ListingProblem:
    """An entry under an input that could not be listed, with one sentence saying why."""

    uri: str
    message: str


@dataclass(frozen=True)
class LocalListing:
    """Files found under the inputs (URIs, sorted, each file once) and the entries that failed."""

    files: list[str] = field(default_factory=list)
    problems: list[ListingProblem] = field(default_factory=list)


def uri_for_local_path(path: str) -> str:
    """``file:`` URI of a local path, spelled as Spark's file index spells it.

    ``java.net.URI`` escapes spaces, control characters and ``%"#<>?[\\]^`{|}`` as UTF-8
    ``%XX`` and keeps other characters, non-ASCII letters included, as they are:
    ``/data/a b/é.wav`` → ``file:/data/a%20b/é.wav``.
    """
    absolute = os.path.abspath(path)
    if _PLAIN_PATH.match(absolute):
        return "file:" + absolute
    out = []
    for char in absolute:
        if char.isascii():
            keep = char.isalnum() or char in _URI_PATH_SAFE
        else:
            keep = unicodedata.category(char) not in ("Cc", "Zs", "Zl", "Zp")
        out.append(char if keep else "".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
    return "file:" + "".join(out)


def local_path(uri: str) -> str | None:
    """The local file-system path of a ``file:`` URI (or a plain path); None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return None


def local_uri(path: str) -> str:
    """``file:`` URI of a local path, spelled as Spark lists files (``file:/a%20b/c.wav``)."""
    return uri_for_local_path(unquote(urlparse(path).path) if path.startswith("file:") else path)


def is_hidden_name(name: str) -> bool:
    """Names Spark's file index skips: ``.name``, ``_name`` (unless it holds ``=``), ``*._COPYING_``."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def walk_local(roots: Sequence[str]) -> LocalListing:
    """List every file under local ``roots`` (folders, files or glob patterns), recursively.

    Links to files are listed under the link's name. A link to a folder is followed unless
    that folder was entered already (a loop, or a second link to the same folder): then it
    becomes a problem, so that no file is listed twice. Broken links, link loops, unreadable
    folders and special files (FIFOs, sockets, devices) become problems too.

    Raises
    ------
    UserError
        When a root (or every match of a glob pattern) does not exist.
    """
    listing = LocalListing()
    entered: dict[tuple[int, int], str] = {}
    for root in roots:
        matches = sorted(glob.glob(root)) if glob.has_magic(root) else [root]
        if not matches or not all(os.path.lexists(match) for match in matches):
            raise UserError(f"cannot read input {root}: no such file or folder")
        for match in matches:
            _walk_root(os.path.abspath(match), listing, entered)
    listing.files.sort()
    log.info("listed %d files, %d entries could not be listed", len(listing.files), len(listing.problems))
    return listing


def _walk_root(root: str, listing: LocalListing, entered: dict[tuple[int, int], str]) -> None:
    pending = [root]
    while pending:
        path = pending.pop()
        try:
            status = os.stat(path)
        except OSError as exc:
            listing.problems.append(ListingProblem(uri_for_local_path(path), _link_message(path, exc)))
            continue
        if stat.S_ISREG(status.st_mode):
            listing.files.append(uri_for_local_path(path))
            continue
        if not stat.S_ISDIR(status.st_mode):
            listing.problems.append(
                ListingProblem(uri_for_local_path(path), "not a regular file (a FIFO, socket or device); skipped")
            )
            continue
        key = (status.st_dev, status.st_ino)
        if key in entered:
            listing.problems.append(
                ListingProblem(
                    uri_for_local_path(path),
                    f"symbolic link to a folder already listed as {entered[key]} (a loop or a second link); "
                    "not followed, so that no file is listed twice",
                )
            )
            continue
        entered[key] = path
        try:
            with os.scandir(path) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            reason = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror
            listing.problems.append(ListingProblem(uri_for_local_path(path), f"cannot list this folder: {reason}"))
            continue
        pending.extend(os.path.join(path, name) for name in reversed(names) if not is_hidden_name(name))


def _link_message(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop: the link points back to itself through other links"
    if os.path.islink(path):
        return f"broken symbolic link: its target {os.readlink(path)} does not exist"
    return f"cannot read this entry: {exc.strerror}"
