"""Shared command-line plumbing of the jobs: config flags, logging, user-error handling."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from ser_udfs.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def base_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """Parser with ``--config``, ``--set key=value`` (repeatable) and ``--log-level``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", default=str(CONF_DIR / default_config),
        help=f"TOML config (default: conf/{default_config})",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set mel.n_mels=64 (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a job's ``main``; a :class:`UserError` becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as exc:
        logging.getLogger("ser_spark").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2


def setup_logging(level: str) -> None:
    """Timestamped log lines on stderr; quiet py4j."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
