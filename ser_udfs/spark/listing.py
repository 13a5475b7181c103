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

Which names Hadoop cannot open (:func:`hadoop_can_address`), which are headerless audio
(:data:`HEADERLESS_EXTENSIONS`), and the ``errors`` row of an entry the listing could not hand
over (:func:`listing_clip_error`) are decided here too, once for both jobs.
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

from ser_udfs.errors import ClipError, UserError

log = logging.getLogger(__name__)

# ASCII characters java.net.URI leaves as they are in a path (letters and digits aside).
_URI_PATH_SAFE = frozenset("-_.!~*'(),;:$&+=@/")
# A path made only of those and ASCII letters and digits is its own URI path (the common case).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-_.!~*'(),;:$&+=@/]*\Z")
# A URI scheme (two letters or more: ``C:`` is a Windows drive, not a scheme).
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")

#: Names of headerless audio (bare samples: nothing says their rate, encoding or channels).
#: Both jobs list them and report each as an ``unsupported`` errors row; none is read.
HEADERLESS_EXTENSIONS = (".raw", ".pcm", ".ulaw", ".alaw", ".sln", ".vox")
#: The ``listing_error`` of a headerless file (see :func:`listing_clip_error`).
HEADERLESS_MESSAGE = (
    "headerless raw audio is not supported: nothing in the file says its sample rate, encoding or channels; "
    "convert it to WAV or FLAC, e.g. sox -t raw -r 8000 -e u-law -b 8 -c 1 call.raw call.wav"
)


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
    ``/data/a b/é.wav`` → ``file:/data/a%20b/é.wav``. Bytes of a name that are not UTF-8
    (surrogate escapes in ``path``) become ``%XX`` of those bytes, so that the URI is valid text
    and :func:`local_path` gives the same name back.
    """
    absolute = os.path.abspath(path)
    if _PLAIN_PATH.match(absolute):
        return "file:" + absolute
    out = []
    for char in absolute:
        if char.isascii():
            keep = char.isalnum() or char in _URI_PATH_SAFE
        else:
            keep = unicodedata.category(char) not in ("Cc", "Zs", "Zl", "Zp", "Cs")
        out.append(char if keep else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape")))
    return "file:" + "".join(out)


def local_path(uri: str) -> str | None:
    """The local file-system path of a ``file:`` URI (or a plain path, as it is); None for other schemes.

    ``%XX`` bytes that are not UTF-8 come back as the bytes of the name (surrogate escapes, as
    :func:`os.fsdecode` gives them), so :func:`uri_for_local_path` and this function round-trip.
    """
    if not _HAS_SCHEME.match(uri):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path, errors="surrogateescape")
    return None


def local_uri(path: str) -> str:
    """``file:`` URI of a local path, spelled as Spark lists files (``file:/a%20b/c.wav``)."""
    return uri_for_local_path(local_path(path) or path)


def hadoop_can_address(path: str) -> bool:
    """Whether Hadoop can open the local ``path``: no ``:`` in it, and every byte of it UTF-8.

    Hadoop's ``Path`` takes a name holding ``:`` for a URI scheme (``URISyntaxException:
    Relative path in absolute URI``, when it opens the file's ``.crc`` sibling or resolves a
    path through a folder so named), and the JVM spells names as UTF-8 text, so it cannot name
    bytes that are not.
    """
    return ":" not in path and not any("\udc80" <= char <= "\udcff" for char in path)


def listing_clip_error(listing_error: str) -> ClipError:
    """The ``errors`` row of an entry the listing could not hand over: ``unsupported`` for
    headerless audio (:data:`HEADERLESS_MESSAGE`), ``read`` for anything else."""
    return ClipError("unsupported" if listing_error == HEADERLESS_MESSAGE else "read", listing_error)


def is_hidden_name(name: str) -> bool:
    """Names Spark's file index skips: ``.name``, ``_name`` (unless it holds ``=``), ``*._COPYING_``."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def is_glob(path: str) -> bool:
    """Whether a local input is a glob pattern: it holds wildcards and no such file or folder exists.

    Hadoop's ``{a,b}`` alternatives count too (see :func:`expand_braces`).
    """
    return (glob.has_magic(path) or "{" in path) and not os.path.lexists(path)


def expand_braces(pattern: str) -> list[str]:
    """The patterns that Hadoop's ``{a,b}`` alternatives stand for, nested ones too, in order.

    ``/data/{a,b{1,2}}/*.wav`` → ``/data/a/*.wav``, ``/data/b1/*.wav``, ``/data/b2/*.wav``;
    :mod:`glob` handles the rest (``*``, ``?``, ``[...]``).
    """
    innermost = re.search(r"\{([^{}]*)\}", pattern)
    if innermost is None:
        return [pattern]
    head, tail = pattern[: innermost.start()], pattern[innermost.end() :]
    return [expanded for choice in innermost[1].split(",") for expanded in expand_braces(head + choice + tail)]


def walk_local(roots: Sequence[str]) -> LocalListing:
    """List every file under local ``roots`` (folders, files or glob patterns), recursively.

    A root that exists is taken literally, whatever characters its name holds (a folder named
    ``calls [2024]``); only a root that does not exist is expanded as a glob pattern, Hadoop's
    ``{a,b}`` included. Links to files are listed under the link's name. A link to a folder is
    followed unless that folder was entered already (a loop, or a second link to the same
    folder): then it becomes a problem, so that no file is listed twice. Broken links, link
    loops, unreadable folders and special files (FIFOs, sockets, devices) become problems too.

    Raises
    ------
    UserError
        When a root (or every match of a glob pattern) does not exist.
    """
    listing = LocalListing()
    entered: dict[tuple[int, int], str] = {}
    for root in roots:
        matches = [root]
        if is_glob(root):
            matches = sorted({match for pattern in expand_braces(root) for match in glob.glob(pattern)})
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
