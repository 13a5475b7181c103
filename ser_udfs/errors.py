"""Exceptions shared by the jobs, the UDFs and the training code."""

from __future__ import annotations


class UserError(Exception):
    """A mistake a user can fix (bad path, bad option, mismatched model).

    Jobs print the message as one sentence, without a traceback, and exit with status 2.
    """


class ClipError(Exception):
    """One audio file that cannot be used; it becomes a row of the ``errors`` table.

    Parameters
    ----------
    kind
        Short code stored as ``error_kind``: ``decode``, ``empty``, ``too_short``, ``silent``,
        ``unsupported``, ``non_finite``, ``read``.
    message
        One sentence for ``error_message``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
