"""The command line a bench prints beside its figures, so a reader can rerun it."""

from __future__ import annotations

import shlex
import sys
from typing import Sequence


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python bench/<script> ARGS``: the arguments given (``argv``), else those of this process."""
    return shlex.join(["python", f"bench/{script}", *(sys.argv[1:] if argv is None else argv)])
