"""The torture corpus: bad, odd and hostile inputs, written by the tests, with what must happen.

:data:`EXTRACT_CASES` lists every entry the reliability tests put under a corpus folder and the
outcome the extraction job must give it: a feature row (``"features"``), an ``errors`` row of a
given ``error_kind`` whose message contains a given fragment, or nothing at all (``"ignored"``:
not an audio file name, or hidden the way Spark hides ``.name`` and ``_name``).
:func:`build_corpus` writes them; everything is small (the 10 minutes of silence are 8 kHz PCM,
9.6 MB).

``docs/RELIABILITY.md`` shows these cases as a table; ``python -m tests.torture --write-doc``
regenerates it and ``tests/test_reliability_extract.py`` checks that the file is current, so
the document says what the tests verify.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import soundfile as sf

from ser_udfs.spark.extract import ERROR_COLUMNS, FEATURE_COLUMNS_DDL
from ser_udfs.synthetic.speech import synth_utterance

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"
TABLE_BEGIN = "<!-- torture-table:begin (python -m tests.torture --write-doc) -->"
TABLE_END = "<!-- torture-table:end -->"
FAULT_BEGIN = "<!-- fault-table:begin (python -m tests.torture --write-doc) -->"
FAULT_END = "<!-- fault-table:end -->"

#: Folder made unreadable (``chmod 000``); as root, tests simulate the refusal (root reads anything).
LOCKED_DIR = "locked folder"


@dataclass(frozen=True)
class TortureCase:
    """One entry of the torture corpus.

    Attributes
    ----------
    path
        Where it goes, relative to the corpus root (``/``-separated).
    what
        The input, in words, for the report.
    expect
        ``"features"``, ``"ignored"`` or the ``error_kind`` of its ``errors`` row.
    message
        A fragment the error message must contain (empty for features and ignored entries).
    write
        Creates the entry at the given path (parent folders exist).
    """

    path: str
    what: str
    expect: str
    message: str
    write: Callable[[Path], None]


def _speech(rate: int = 16000, seconds: float = 1.0, seed: int = 1) -> np.ndarray:
    return synth_utterance("angry", speaker_seed=seed, utterance_seed=seed, sample_rate=rate, duration_s=seconds)


def _pcm_wav(path: Path, wave: np.ndarray, rate: int = 16000) -> None:
    sf.write(path, wave, rate, subtype="PCM_16")


def _patched(offset: int, value: int, fmt: str = "<I") -> Callable[[Path], None]:
    """A good PCM WAV with ``value`` packed at byte ``offset`` of its header."""

    def write(path: Path) -> None:
        _pcm_wav(path, _speech())
        data = bytearray(path.read_bytes())
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        path.write_bytes(bytes(data))

    return write


def _header_only(path: Path) -> None:
    _pcm_wav(path, _speech())
    path.write_bytes(path.read_bytes()[:44])


def _truncated(path: Path) -> None:
    _pcm_wav(path, _speech(seconds=1.0))
    path.write_bytes(path.read_bytes()[: 44 + 16000])  # header says 1 s; 0.5 s of samples remain


def _truncated_flac(path: Path) -> None:
    sf.write(path, _speech(seconds=2.0), 16000, format="FLAC")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _non_finite(path: Path) -> None:
    wave = _speech()
    wave[::7] = np.nan
    wave[3::11] = np.inf
    sf.write(path, wave, 16000, subtype="FLOAT")


def _clipped(path: Path) -> None:
    _pcm_wav(path, np.clip(_speech() * 8.0, -1.0, 1.0))


def _eight_channels(path: Path) -> None:
    wave = _speech()
    sf.write(path, np.stack([wave * (0.2 + 0.1 * k) for k in range(8)], axis=1), 16000, subtype="PCM_16")


def _near_silent(path: Path) -> None:
    noise = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 2e-5
    sf.write(path, noise, 16000, subtype="FLOAT")


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _locked_dir(path: Path) -> None:
    path.mkdir()
    _pcm_wav(path / "inside.wav", _speech(seed=4))
    path.chmod(0)


EXTRACT_CASES: tuple[TortureCase, ...] = (
    TortureCase("bad/empty.wav", "empty file (0 bytes)", "empty", "the file is empty", lambda p: p.write_bytes(b"")),
    TortureCase("bad/header_only.wav", "WAV header, no samples", "empty", "holds no audio samples", _header_only),
    TortureCase(
        "odd/truncated.wav", "WAV cut to half its samples (header still says 1 s)", "features", "", _truncated
    ),
    TortureCase("bad/truncated.flac", "FLAC cut in half", "decode", "flac decoder lost sync", _truncated_flac),
    TortureCase(
        "bad/random bytes.wav", "4 kB of random bytes named .wav", "decode", "cannot decode audio",
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    ),
    TortureCase(
        "bad/text.flac", "a text file named .flac", "decode", "cannot decode audio",
        lambda p: p.write_text("this is not audio\n" * 20),
    ),
    TortureCase("bad/nan_inf.wav", "float WAV full of NaN and inf", "non_finite", "NaN or infinite", _non_finite),
    TortureCase(
        "bad/one_sample.wav", "a 1-sample file", "too_short", "shorter than the",
        lambda p: _pcm_wav(p, np.array([0.5], np.float32)),
    ),
    TortureCase(
        "bad/silence_10min.wav", "10 minutes of digital silence (8 kHz)", "silent", "the clip is silent",
        lambda p: _pcm_wav(p, np.zeros(8000 * 600, np.float32), 8000),
    ),
    TortureCase(
        "bad/dc_offset.wav", "DC offset only (constant 0.25)", "silent", "constant DC offset",
        lambda p: _pcm_wav(p, np.full(16000, 0.25, np.float32)),
    ),
    TortureCase("bad/near_silent.wav", "noise at -94 dBFS", "silent", "the clip is silent", _near_silent),
    TortureCase("odd/clipped.wav", "speech clipped at full scale (8x gain)", "features", "", _clipped),
    TortureCase("odd/eight_channels.wav", "8 channels", "features", "", _eight_channels),
    TortureCase(
        "odd/rate_192k.wav", "192 kHz sample rate", "features", "",
        lambda p: _pcm_wav(p, _speech(rate=192000), 192000),
    ),
    TortureCase(
        "bad/rate_0hz.wav", "sample rate 0 Hz in the header", "decode", "impossible sample rate 0 Hz", _patched(24, 0)
    ),
    TortureCase(
        "bad/rate_absurd.wav", "sample rate 4294967295 Hz in the header", "decode",
        "impossible sample rate 4294967295 Hz", _patched(24, 0xFFFFFFFF),
    ),
    TortureCase(
        "bad/codec_wma.wav", "WAV with an unsupported codec (format tag 0x0161, WMA)", "unsupported",
        "WAV codec 0x0161 is not supported", _patched(20, 0x0161, "<H"),
    ),
    TortureCase(
        "odd/interview take 3.wav", "a name that matches no corpus", "features", "",
        lambda p: _pcm_wav(p, _speech(seed=2)),
    ),
    TortureCase(
        "odd/dossier été/ñandú 03 — prise #1 [50%].flac", "a path with spaces, non-ASCII letters and #[]%",
        "features", "", lambda p: sf.write(p, _speech(seed=3), 16000, format="FLAC"),
    ),
    TortureCase(
        "odd/03-01-05-01-01-01-01.wav", "a good RAVDESS clip (actor 01, angry)", "features", "",
        lambda p: _pcm_wav(p, _speech(48000), 48000),
    ),
    TortureCase("links/self.wav", "a symbolic link to itself", "read", "symbolic link loop", _symlink("self.wav")),
    TortureCase(
        "links/parent", "a symbolic link to its own parent folder (a folder loop)", "read",
        "already listed", _symlink(".."),
    ),
    TortureCase(
        "links/broken.wav", "a symbolic link to a missing file", "read", "broken symbolic link",
        _symlink("missing.wav"),
    ),
    TortureCase(
        "links/good link.wav", "a symbolic link to a good file", "features", "", _symlink("../odd/clipped.wav")
    ),
    TortureCase("links/fifo.wav", "a FIFO named .wav (would block a reader)", "read", "not a regular file", _fifo),
    TortureCase(
        LOCKED_DIR, "an unreadable folder (chmod 000; simulated when the tests run as root)", "read",
        "cannot list this folder: permission denied", _locked_dir,
    ),
    TortureCase("notes.txt", "a text file with a non-audio name", "ignored", "", lambda p: p.write_text("notes\n")),
    TortureCase(
        "odd/._clipped.wav", "a hidden macOS AppleDouble file (._name)", "ignored", "",
        lambda p: p.write_bytes(b"\x00\x05\x16\x07" + bytes(60)),
    ),
)


def build_corpus(root: Path, cases: tuple[TortureCase, ...] = EXTRACT_CASES) -> Path:
    """Write ``cases`` under ``root`` (created) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for case in cases:
        target = root / case.path
        target.parent.mkdir(parents=True, exist_ok=True)
        case.write(target)
    return root


def unlock(root: Path) -> None:
    """Make the locked folder readable again so that the corpus can be deleted."""
    locked = root / LOCKED_DIR
    if locked.exists():
        locked.chmod(0o755)


def locked_is_readable(root: Path) -> bool:
    """Whether the ``chmod 000`` folder can still be listed (it can by root)."""
    try:
        os.listdir(root / LOCKED_DIR)
    except PermissionError:
        return False
    return True


def deny_listing(folder: Path) -> Callable[..., object]:
    """An ``os.scandir`` stand-in that refuses ``folder`` like the kernel does for non-root users."""
    original = os.scandir
    refused = os.path.abspath(folder)

    def scandir(path: object = ".") -> object:
        if not isinstance(path, int) and os.path.abspath(os.fsdecode(path)) == refused:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return original(path)  # type: ignore[arg-type]

    return scandir


def relative_name(uri: str, root: Path) -> str:
    """The corpus-relative name of a listed URI (``file:/tmp/x/bad/a%20b.wav`` → ``bad/a b.wav``)."""
    return os.path.relpath(unquote(urlparse(uri).path), os.path.abspath(root)).replace(os.sep, "/")


def extraction_tables(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An extraction output's ``features`` and ``errors`` (their contract columns) in a fixed order,
    to compare runs: the same input and config must give equal frames."""
    feature_columns = [column.split()[0] for column in FEATURE_COLUMNS_DDL.split(", ")]
    features = pd.read_parquet(output / "features", columns=feature_columns)
    features["corpus"] = features["corpus"].astype(str)
    errors = pd.read_parquet(output / "errors", columns=list(ERROR_COLUMNS))
    return (
        features.sort_values("clip_id").reset_index(drop=True),
        errors.sort_values("path").reset_index(drop=True),
    )


def expected_outcomes(cases: tuple[TortureCase, ...] = EXTRACT_CASES) -> dict[str, str]:
    """Corpus-relative name → expected outcome of extraction, for every entry that must be listed."""
    return {case.path: case.expect for case in cases if case.expect != "ignored"}


def scoring_outcome(case: TortureCase) -> str:
    """What the scoring job must make of an entry: ``"call"`` (a calls row), ``"no_speech"`` (a
    calls row of that status: silence is flagged, not scored) or the ``error_kind`` of its errors
    row; ``"ignored"`` for entries that are not listed."""
    return {"features": "call", "silent": "no_speech"}.get(case.expect, case.expect)


@dataclass(frozen=True)
class FaultCase:
    """One injected fault of the reliability tests, for the report."""

    fault: str
    how: str
    outcome: str
    test: str


FAULT_CASES: tuple[FaultCase, ...] = (
    FaultCase(
        "a task fails mid-way",
        "`SER_SPARK_FAIL_ONCE_PER_PARTITION` makes the first attempt of every task raise after its "
        "first output batch; `local[2,4]` allows retries",
        "every partition failed once and was retried; the tables equal a clean run's (both writers: PyArrow "
        "in the workers and Spark's): no row lost, none duplicated",
        "tests/test_faults.py::test_task_failing_once_per_partition_is_retried_without_duplicates",
    ),
    FaultCase(
        "a scoring task fails mid-way",
        "the same variable in the scoring job, one call per partition",
        "segments, calls and errors equal a clean run's",
        "tests/test_reliability_score.py::test_scoring_task_failing_once_per_partition_is_retried_without_duplicates",
    ),
    FaultCase(
        "the job is killed while it writes",
        "`SER_SPARK_TASK_DELAY_S` slows every task; the driver's process group gets SIGKILL once the "
        "staging folder has files",
        "no `_SUCCESS`, no `_manifest.json`: readers refuse the folder; the rerun removes the staging "
        "leftovers and gives the clean run's rows, without duplicates",
        "tests/test_faults.py::test_job_killed_mid_write_is_never_taken_for_finished_and_rerun_completes",
    ),
    FaultCase(
        "a finished output is rerun and killed",
        "a complete output, then a second run killed mid-write",
        "the second run removes `_SUCCESS` first, so the half-replaced output is refused too",
        "tests/test_faults.py::test_job_killed_mid_write_is_never_taken_for_finished_and_rerun_completes",
    ),
    FaultCase(
        "rerun with the same input and config",
        "the same job twice, with 64 and with 2 files per partition",
        "identical rows and values (features compared exactly), identical errors",
        "tests/test_faults.py::test_reruns_are_idempotent_whatever_the_partitioning",
    ),
    FaultCase(
        "tampered or incomplete model bundle",
        "a missing file, truncated weights, an edited feature config, changed weights, a pickle "
        "planted beside the weights",
        "refused with one sentence naming the bundle and the problem; no pickle is ever loaded",
        "tests/test_faults.py::test_damaged_bundles_are_refused",
    ),
    FaultCase(
        "hostile manifest and arguments",
        "manifest paths on other schemes (`http:`, `hdfs:`), an `--output` that holds an `--input`, "
        "negative or zero counts, unknown keys",
        "refused with one sentence saying what to change (exit status 2); nothing is written to the input",
        "tests/test_faults.py::test_manifest_schemes_and_outputs_are_checked",
    ),
    FaultCase(
        "a job writes outside its output",
        "snapshots of the input tree and of the output's parent folder before and after a run",
        "nothing changes outside `--output`",
        "tests/test_faults.py::test_job_writes_only_inside_its_output",
    ),
    FaultCase(
        "a real standalone cluster",
        "`scripts/cluster.sh start` (1 master, 2 workers on 127.0.0.1), `spark-submit --master "
        "spark://... --py-files dist/ser_spark.zip`",
        "extraction and scoring tables equal local mode's; the executors received the archive; the cluster "
        "is stopped afterwards",
        "tests/test_cluster.py",
    ),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_extract_table(cases: tuple[TortureCase, ...] = EXTRACT_CASES) -> str:
    """The Markdown table of the torture cases."""
    lines = [
        "| input | path in the corpus | extraction | scoring | `error_kind` | message contains |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        extraction = {"features": "feature row", "ignored": "not listed"}.get(case.expect, "errors row")
        scoring = {"call": "calls row", "no_speech": "calls row, status `no_speech`", "ignored": "not listed"}.get(
            scoring_outcome(case), "errors row"
        )
        kind = "" if case.expect in ("features", "ignored") else f"`{case.expect}`"
        lines.append(
            f"| {_cell(case.what)} | `{_cell(case.path)}` | {extraction} | {scoring} | {kind} | {_cell(case.message)} |"
        )
    return "\n".join(lines)


def render_fault_table(cases: tuple[FaultCase, ...] = FAULT_CASES) -> str:
    """The Markdown table of the injected faults."""
    lines = ["| fault | how it is injected | what happens | checked by |", "|---|---|---|---|"]
    for case in cases:
        lines.append(f"| {_cell(case.fault)} | {_cell(case.how)} | {_cell(case.outcome)} | `{case.test}` |")
    return "\n".join(lines)


def _replace_between(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{DOC_PATH} lacks the markers {begin!r} ... {end!r}")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def render_doc(text: str) -> str:
    """``text`` (the report) with both generated tables brought up to date."""
    text = _replace_between(text, TABLE_BEGIN, TABLE_END, render_extract_table())
    return _replace_between(text, FAULT_BEGIN, FAULT_END, render_fault_table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate or check the tables of docs/RELIABILITY.md.")
    parser.add_argument("--write-doc", action="store_true", help="rewrite the tables in place")
    args = parser.parse_args(argv)
    current = DOC_PATH.read_text(encoding="utf-8")
    wanted = render_doc(current)
    if args.write_doc:
        DOC_PATH.write_text(wanted, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
        return 0
    if wanted != current:
        print(f"{DOC_PATH} is out of date: run python -m tests.torture --write-doc", file=sys.stderr)
        return 1
    print(f"{DOC_PATH} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
