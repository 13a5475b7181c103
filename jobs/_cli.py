"""Shared command-line plumbing of the jobs: config flags, logging, user-error handling."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Any, Callable, Sequence

from ser_udfs.defaults import conf_dir
from ser_udfs.errors import UserError
from ser_udfs.settings import load_toml, to_toml
from ser_udfs.spark.io import DEFAULT_LOCK_STALE_S

CONF_DIR = conf_dir()


def base_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """Parser with ``--config``, ``--set key=value`` (repeatable), ``--print-config`` and ``--log-level``.

    ``default_config`` is the name of the job's file in ``conf/`` (``train_<model>.toml`` for
    one per model); the ``--set`` help shows a key of it and lists its sections.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument(
        "--config", default=str(CONF_DIR / default_config),
        help=f"TOML config (default: conf/{default_config})",
    )
    example, sections = set_example(default_config)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"override one config value, e.g. --set {example} (repeatable); sections: {', '.join(sections)}",
    )
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults, --config, --set and flags) as TOML and exit")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def set_example(default_config: str) -> tuple[str, list[str]]:
    """A ``key=value`` the job's default config holds (so the job accepts it) and the config's sections."""
    sections: list[str] = []
    example = None
    for path in sorted(CONF_DIR.glob(default_config.replace("<model>", "*"))):
        for section, values in load_toml(path).items():
            if not isinstance(values, dict):
                continue
            sections += [section] if section not in sections else []
            numbers = [(key, value) for key, value in values.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)]
            if example is None and numbers:
                example = f"{section}.{numbers[0][0]}={numbers[0][1]}"
    return example or "section.key=value", sections


def print_config(config: Any) -> int:
    """``--print-config``: the resolved config as TOML on stdout; the job's exit status."""
    print(to_toml(config), end="")
    return 0


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--output`` and ``--lock-stale-h``, for the jobs that write an output folder."""
    parser.add_argument("--output", required=True, help="output folder (local path or URI)")
    parser.add_argument(
        "--lock-stale-h", type=_positive_hours, default=DEFAULT_LOCK_STALE_S / 3600, metavar="HOURS",
        help="take over the output's lock of a run on another host after this long (default: %(default)g); "
        "a dead run on this host loses its lock at once",
    )


def _positive_hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of hours, not {text!r}") from None
    if not hours > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 hours, not {text}")
    return hours


#: What a job says when the disk fills up (the output is only replaced once everything is written).
DISK_FULL_MESSAGE = (
    "no space left on device while the job was writing; free some space (or choose another --output) "
    "and rerun: the previous output, if any, is unchanged"
)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a job's ``main``; a :class:`UserError` becomes one line on stderr and exit status 2.

    A full disk (``ENOSPC`` in Python, "No space left on device" from the JVM or a worker)
    becomes one line too, with exit status 1: the input was fine, the run failed.
    """
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)  # once: the log goes to stderr too
        return 2
    except Exception as exc:
        if not _disk_full(exc):
            raise
        print(f"error: {DISK_FULL_MESSAGE}", file=sys.stderr)
        return 1


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it came from says the disk is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        try:
            text = str(exc)  # a Py4JJavaError asks the JVM for the Java stack trace
        except Exception:
            text = ""
        if "No space left on device" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def setup_logging(level: str) -> None:
    """Timestamped log lines on stderr; quiet py4j."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
