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
    scoring
        What the scoring job must make of it, when that is not what :func:`scoring_outcome`
        derives from ``expect`` (e.g. ``"call"`` for stereo whose channels cancel only when mixed).
    optional
        The file system may refuse the name (``:`` or bytes that are not UTF-8, on macOS or
        Windows file systems): :func:`build_corpus` then leaves this entry out, and only it.
    """

    path: str
    what: str
    expect: str
    message: str
    write: Callable[[Path], None]
    scoring: str = ""
    optional: bool = False


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


def write_corrupted_ogg(path: Path) -> None:
    """4 s of speech as OGG Vorbis with 200 random bytes written over its middle (a page body):
    libsndfile decodes from 3.1 s of it to all 4 s, depending on the sizes of the reads, without
    an error, while the header still says 4 s."""
    sf.write(path, _speech(seconds=4.0), 16000, format="OGG", subtype="VORBIS")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = np.random.default_rng(0).bytes(200)
    path.write_bytes(bytes(data))


def _cancelling_stereo(path: Path) -> None:
    """Stereo speech whose right channel is the left one inverted: the down-mix is (nearly) zero."""
    wave = _speech(seed=5)
    sf.write(path, np.stack([wave, -wave], axis=1), 16000, subtype="PCM_16")


def _raw_ulaw(path: Path) -> None:
    """1 s of speech as headerless 8 kHz µ-law bytes (what telephony systems often store as .raw)."""
    wave = np.clip(_speech(rate=8000), -1.0, 1.0)
    ulaw = np.sign(wave) * np.log1p(255 * np.abs(wave)) / np.log1p(255)
    path.write_bytes((~((ulaw + 1) * 127.5).astype(np.uint8)).tobytes())


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
        "bad/corrupted.ogg", "OGG Vorbis of 4 s with 200 random bytes over its middle (libsndfile decodes 3.1 s "
        "to all 4 s, by read size, without an error)", "decode", "fails its checksum or is cut short",
        write_corrupted_ogg,
    ),
    TortureCase(
        "bad/cancelling_stereo.wav", "stereo speech whose channels cancel in the down-mix (right = -left)",
        "silent", "the channels cancel out", _cancelling_stereo, scoring="call",
    ),
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
    TortureCase(
        "names/take 10:30:00.wav", "a name holding `:` (Hadoop reads `take 10:` as a URI scheme)", "features", "",
        lambda p: _pcm_wav(p, _speech(seed=6)), optional=True,
    ),
    TortureCase(
        "names/2024-01-01T10:00/inside.wav", "a folder name holding `:`", "features", "",
        lambda p: _pcm_wav(p, _speech(seed=7)), optional=True,
    ),
    TortureCase(
        "names/caf\udce9 latin-1.wav", "a name that is not valid UTF-8 (the Latin-1 byte 0xE9)", "features", "",
        lambda p: _pcm_wav(p, _speech(seed=8)), optional=True,
    ),
    TortureCase(
        "bad/call.raw", "headerless 8 kHz µ-law samples named .raw", "unsupported",
        "headerless raw audio is not supported", _raw_ulaw,
    ),
    TortureCase("notes.txt", "a text file with a non-audio name", "ignored", "", lambda p: p.write_text("notes\n")),
    TortureCase(
        "odd/._clipped.wav", "a hidden macOS AppleDouble file (._name)", "ignored", "",
        lambda p: p.write_bytes(b"\x00\x05\x16\x07" + bytes(60)),
    ),
)


def build_corpus(root: Path, cases: tuple[TortureCase, ...] = EXTRACT_CASES) -> Path:
    """Write ``cases`` under ``root`` (created) and return ``root``.

    An optional case whose name the file system refuses is left out (see :func:`present_cases`).
    """
    root.mkdir(parents=True, exist_ok=True)
    for case in cases:
        target = root / case.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            case.write(target)
        except (OSError, UnicodeError):
            if not case.optional:
                raise
    return root


def present_cases(root: Path, cases: tuple[TortureCase, ...] = EXTRACT_CASES) -> tuple[TortureCase, ...]:
    """The cases :func:`build_corpus` wrote under ``root``: all but optional ones the OS refused."""
    return tuple(case for case in cases if not case.optional or os.path.lexists(root / case.path))


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
    path = unquote(urlparse(uri).path, errors="surrogateescape")
    return os.path.relpath(path, os.path.abspath(root)).replace(os.sep, "/")


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
    row; ``"ignored"`` for entries that are not listed. ``case.scoring``, when set, wins: scoring
    takes each channel on its own, so stereo that only the down-mix silences is a call."""
    return case.scoring or {"features": "call", "silent": "no_speech"}.get(case.expect, case.expect)


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
        "a complete output, then a second run killed with SIGKILL while it stages its tables",
        "the output is still finished and its tables unchanged; the killed run's lock (its pid is gone) "
        "does not block the next run, which takes it over with a warning and removes the staging leftovers",
        "tests/test_reliability_outputs.py::test_lock_left_by_a_job_killed_with_sigkill_does_not_block_the_next_run",
    ),
    FaultCase(
        "a run dies while it moves its tables in",
        "`OutputDir.move_into_place` interrupted after the first table",
        "no `_SUCCESS`, no `_manifest.json`: readers refuse the half-replaced output; the rerun completes",
        "tests/test_reliability_outputs.py::"
        "test_a_run_that_dies_while_it_replaces_the_tables_leaves_an_output_readers_refuse",
    ),
    FaultCase(
        "two jobs write the same output",
        "an extraction job slowed by `SER_SPARK_TASK_DELAY_S`, a second one started into its output",
        "the second is refused in one sentence naming the first's pid (exit status 2); the first finishes "
        "with all its rows; a live owner's lock is never taken over, a dead or stale one is",
        "tests/test_reliability_outputs.py::"
        "test_second_job_into_the_same_output_is_refused_and_the_first_keeps_all_its_rows",
    ),
    FaultCase(
        "a refused run over a finished output",
        "a manifest with an `http:` path, a mistyped or empty `--input`, a missing bundle, a `--plot` that "
        "matches no call; into a finished output and into a new folder",
        "refused in one sentence (exit status 2) before the output is touched: the finished output is byte "
        "for byte as it was, no new folder is created",
        "tests/test_reliability_outputs.py::test_refused_scoring_leaves_a_finished_output_as_it_was",
    ),
    FaultCase(
        "a full disk",
        "the writer raises `OSError(ENOSPC)`, or a Java `IOException` \"No space left on device\", after "
        "staging its files",
        "one sentence saying so and what to do (exit status 1), no traceback; the previous output is byte "
        "for byte as it was, no staging folder or lock is left, no new folder is created",
        "tests/test_reliability_outputs.py::test_full_disk_ends_in_one_sentence_and_keeps_the_previous_output",
    ),
    FaultCase(
        "rerun with the same input and config",
        "the same job twice, with 64 and with 2 files per partition",
        "identical rows and values (features compared exactly), identical errors",
        "tests/test_faults.py::test_reruns_are_idempotent_whatever_the_partitioning",
    ),
    FaultCase(
        "tampered or incomplete model bundle",
        "a missing file, truncated weights, an edited feature config, changed weights, extra weights",
        "refused with one sentence naming the bundle and the problem",
        "tests/test_faults.py::test_damaged_bundles_are_refused",
    ),
    FaultCase(
        "poisoned model bundle",
        "a FIFO named `extra.safetensors` or `config.json`; NaN or infinite weights with their checksums "
        "recomputed; labels swapped or renamed in `config.json`, alone or with the taxonomy",
        "refused with one sentence naming the bundle and the problem; the FIFO is never opened (no hang); "
        "a bundle written before `labels_sha256` existed loads with a warning, its labels checked against "
        "its taxonomy",
        "tests/test_reliability_bundles.py",
    ),
    FaultCase(
        "a pickle file beside the weights",
        "`model.pkl` and `sub/weights.pt` in a bundle folder; `pickle.load(s)` and `torch.load` made to fail",
        "the bundle loads from its safetensors and JSON; the pickles are never opened, and a warning names them",
        "tests/test_reliability_bundles.py::test_a_pickle_beside_the_weights_is_never_opened_and_named_in_a_warning",
    ),
    FaultCase(
        "a model whose probabilities are NaN",
        "a predictor that returns NaN for the windows of a call",
        "the call is an `errors` row of kind `internal` saying so, none of its probabilities is written; "
        "the scoring job refuses a model that gives NaN for a window of noise before it starts",
        "tests/test_reliability_bundles.py::test_a_window_the_model_gives_nan_probabilities_is_an_error_of_its_call",
    ),
    FaultCase(
        "hostile manifest and arguments",
        "manifest paths on other schemes (`http:`, `hdfs:`), an `--output` that holds an `--input`, "
        "negative or zero counts, unknown keys",
        "refused with one sentence saying what to change (exit status 2); nothing is written to the input",
        "tests/test_faults.py::test_manifest_schemes_and_outputs_are_checked",
    ),
    FaultCase(
        "a manifest that lists one file five ways",
        "the same clip as two identical rows, an absolute path, a `file://` URI and `./clips/../clips/...`, "
        "with four labels",
        "the spellings are normalised to one path (the one its clip id is made from) and the manifest is "
        "refused in one sentence naming the file and its lines (exit status 2); exact repeats are refused too",
        "tests/test_reliability_extract.py::test_a_manifest_listing_one_file_five_ways_is_refused_in_one_sentence",
    ),
    FaultCase(
        "manifest paths outside the allowed roots",
        "`read.manifest_roots` set; a path outside, a `..` out of a root, a link inside a root to a file outside",
        "refused in one sentence naming the row and the roots (exit status 2); an empty list restricts nothing",
        "tests/test_reliability_extract.py::test_manifest_roots_restrict_where_manifest_paths_may_point",
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
    """``text`` for a Markdown cell; bytes of a name that are not UTF-8 shown as ``\\xE9``."""
    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown.replace("|", "\\|")


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
