"""Corpus detection and emotion labels from file names, folders and user manifests.

Each supported corpus encodes speaker and emotion in its file names:

============  ==============================  ==========================================
corpus        name (any extension)            example
============  ==============================  ==========================================
``ravdess``   ``MO-VC-EE-II-SS-RR-AA``        ``03-01-05-01-02-01-12.wav``
``crema-d``   ``AAAA_SSS_EEE_II``             ``1001_DFA_ANG_XX.wav``
``savee``     ``SP_ee00`` or ``SP/ee00``      ``DC_a01.wav``, ``AudioData/JE/sa03.wav``
``tess``      ``SPK_word_emotion``            ``OAF_back_angry.wav``
``emodb``     ``SStttEv``                     ``03a01Fa.wav``
============  ==============================  ==========================================

Names that match no rule, or match a pattern with values the corpus never uses (a 7-field name
with actor 34 is not RAVDESS), give ``corpus="unknown"`` and no label: nothing is guessed. Files
listed in a user manifest take their labels from the manifest, never from their names.

``meta`` values keep each corpus' own codes as they appear in the name (RAVDESS intensity
``"02"``, CREMA-D intensity ``"HI"``), like ``raw_label`` does for the emotion.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

logger = logging.getLogger(__name__)

CANONICAL_LABELS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fear",
    "disgust",
    "surprise",
    "boredom",
)

#: Corpus name of manifest rows that leave the ``corpus`` column out or empty.
MANIFEST_CORPUS = "manifest"
UNKNOWN_CORPUS = "unknown"


@dataclass(frozen=True)
class ClipInfo:
    """What a clip's name (or its manifest row) says about it."""

    corpus: str
    speaker: str | None = None
    gender: str | None = None
    label: str | None = None
    raw_label: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestEntry:
    """One row of a user manifest, with its path made absolute."""

    path: str
    label: str | None
    speaker: str | None
    gender: str | None
    corpus: str
    raw_label: str | None
    meta: dict[str, str] = field(default_factory=dict)

    def clip_info(self) -> ClipInfo:
        """The row as a :class:`ClipInfo`, the same record that name parsing gives."""
        return ClipInfo(self.corpus, self.speaker, self.gender, self.label, self.raw_label, dict(self.meta))


# --------------------------------------------------------------------------------------------
# Label normalisation

_LABEL_SYNONYMS: dict[str, str] = {
    **{word: "neutral" for word in ("neutral", "neu", "neutrality")},
    **{word: "calm" for word in ("calm", "calmness")},
    **{word: "happy" for word in ("happy", "happiness", "hap", "joy", "joyful", "glad")},
    **{word: "sad" for word in ("sad", "sadness", "unhappy", "sorrow")},
    **{word: "angry" for word in ("angry", "anger", "ang", "mad")},
    **{word: "fear" for word in ("fear", "fearful", "fea", "afraid", "scared", "fright", "anxious", "anxiety")},
    **{word: "disgust" for word in ("disgust", "disgusted", "dis", "disgusting")},
    **{
        word: "surprise"
        for word in (
            "surprise",
            "surprised",
            "sur",
            "ps",
            "pleasant surprise",
            "pleasant surprised",
            "pleasantly surprised",
        )
    },
    **{word: "boredom" for word in ("boredom", "bored", "boring")},
}


def normalise_label(raw: str) -> str:
    """Map a free-text emotion label to the canonical vocabulary.

    Case, surrounding space and ``_``/``-`` separators do not matter (``"Pleasant_Surprise"`` is
    ``"surprise"``). Labels outside the vocabulary are lower-cased and kept as they are.

    Raises
    ------
    ValueError
        If ``raw`` is empty or only white space.
    """
    text = raw.strip().lower()
    if not text:
        raise ValueError("an emotion label is empty; leave the label cell empty for unlabelled clips")
    key = " ".join(re.split(r"[\s_\-]+", text))
    return _LABEL_SYNONYMS.get(key, text)


# --------------------------------------------------------------------------------------------
# Per-corpus name rules

_RAVDESS_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
_RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}

_CREMAD_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", re.IGNORECASE)
_CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMAD_INTENSITIES = frozenset({"LO", "MD", "HI", "XX"})

_SAVEE_SPEAKERS = frozenset({"DC", "JE", "JK", "KL"})
_SAVEE_NAME = re.compile(r"([A-Z]{2})_(sa|su|[adfhn])(\d\d)", re.IGNORECASE)
_SAVEE_BARE_NAME = re.compile(r"(sa|su|[adfhn])(\d\d)", re.IGNORECASE)
_SAVEE_EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fear",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprise",
}

_TESS_NAME = re.compile(r"(OAF|YAF)_([A-Za-z]+)_(angry|disgust|fear|happy|neutral|ps|sad)", re.IGNORECASE)
_TESS_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprise",
    "sad": "sad",
}

_EMODB_NAME = re.compile(r"(\d\d)([ab](?:0[1-9]|10))([WLEAFTN])([a-z])")
_EMODB_GENDERS = {
    **{speaker: "male" for speaker in ("03", "10", "11", "12", "15")},
    **{speaker: "female" for speaker in ("08", "09", "13", "14", "16")},
}
_EMODB_EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}


def _in_range(code: str, low: int, high: int) -> bool:
    return low <= int(code) <= high


def _parse_ravdess(stem: str) -> ClipInfo | None:
    match = _RAVDESS_NAME.fullmatch(stem)
    if match is None:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    valid = (
        _in_range(modality, 1, 3)
        and _in_range(channel, 1, 2)
        and emotion in _RAVDESS_EMOTIONS
        and _in_range(intensity, 1, 2)
        and not (emotion == "01" and intensity == "02")  # RAVDESS has no strong neutral
        and _in_range(statement, 1, 2)
        and _in_range(repetition, 1, 2)
        and _in_range(actor, 1, 24)
    )
    if not valid:
        return None
    meta = {
        "modality": modality,
        "vocal_channel": channel,
        "intensity": intensity,
        "statement": statement,
        "repetition": repetition,
    }
    gender = "male" if int(actor) % 2 else "female"
    return ClipInfo("ravdess", actor, gender, _RAVDESS_EMOTIONS[emotion], emotion, meta)


def _parse_cremad(stem: str, cremad_gender: Mapping[str, str] | None) -> ClipInfo | None:
    match = _CREMAD_NAME.fullmatch(stem)
    if match is None:
        return None
    actor, sentence, emotion, intensity = match[1], match[2].upper(), match[3].upper(), match[4].upper()
    if not _in_range(actor, 1001, 1091) or emotion not in _CREMAD_EMOTIONS or intensity not in _CREMAD_INTENSITIES:
        return None
    gender = cremad_gender.get(actor) if cremad_gender is not None else None
    meta = {"sentence": sentence, "intensity": intensity}
    return ClipInfo("crema-d", actor, gender, _CREMAD_EMOTIONS[emotion], emotion, meta)


def _parse_savee(stem: str, parent: str) -> ClipInfo | None:
    match = _SAVEE_NAME.fullmatch(stem)
    if match is not None:
        speaker, code, number = match[1].upper(), match[2].lower(), match[3]
    else:
        match = _SAVEE_BARE_NAME.fullmatch(stem)
        if match is None:
            return None
        speaker, code, number = parent.upper(), match[1].lower(), match[2]
    if speaker not in _SAVEE_SPEAKERS:
        return None
    return ClipInfo("savee", speaker, "male", _SAVEE_EMOTIONS[code], code, {"sentence": number})


def _parse_tess(stem: str) -> ClipInfo | None:
    match = _TESS_NAME.fullmatch(stem)
    if match is None:
        return None
    speaker, word, emotion = match[1].upper(), match[2].lower(), match[3].lower()
    return ClipInfo("tess", speaker, "female", _TESS_EMOTIONS[emotion], emotion, {"word": word})


def _parse_emodb(stem: str) -> ClipInfo | None:
    match = _EMODB_NAME.fullmatch(stem)
    if match is None or match[1] not in _EMODB_GENDERS:
        return None
    speaker, text, emotion, version = match.groups()
    meta = {"text": text, "version": version}
    return ClipInfo("emodb", speaker, _EMODB_GENDERS[speaker], _EMODB_EMOTIONS[emotion], emotion, meta)


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")


def _name_and_parent(path: str) -> tuple[str, str]:
    """Last path component and its parent folder's name, for local paths and URIs alike."""
    if _URI_SCHEME.match(path):
        path = unquote(urlsplit(path).path)
    parts = [part for part in re.split(r"[/\\]", path) if part]
    name = parts[-1] if parts else ""
    parent = parts[-2] if len(parts) > 1 else ""
    return name, parent


def parse_clip_path(path: str, *, cremad_gender: Mapping[str, str] | None = None) -> ClipInfo:
    """Read corpus, speaker, gender and emotion from a clip's file name (and parent folder).

    Parameters
    ----------
    path
        Local path or URI (``file:/x/y.flac``, ``hdfs://nn/x/y.wav``, ``s3a://b/k.wav``); any
        extension in any case.
    cremad_gender
        CREMA-D actor id -> ``"male"``/``"female"``, as :func:`load_cremad_demographics` gives;
        without it CREMA-D clips have ``gender=None``.

    Returns
    -------
    ClipInfo
        ``corpus="unknown"`` with every other field empty when no corpus rule matches.
    """
    name, parent = _name_and_parent(path)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    info = (
        _parse_ravdess(stem)
        or _parse_cremad(stem, cremad_gender)
        or _parse_savee(stem, parent)
        or _parse_tess(stem)
        or _parse_emodb(stem)
    )
    return info if info is not None else ClipInfo(UNKNOWN_CORPUS)


# --------------------------------------------------------------------------------------------
# Genders (CREMA-D demographics and manifests)

_GENDER_WORDS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}


def _read_text(path_or_text: str | os.PathLike[str]) -> str:
    """File contents for a path, or the argument itself when it is already CSV text."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return path_or_text
    with open(path_or_text, encoding="utf-8-sig", newline="") as handle:
        return handle.read()


def load_cremad_demographics(path_or_text: str | os.PathLike[str]) -> dict[str, str]:
    """Actor genders from CREMA-D's ``VideoDemographics.csv``.

    Parameters
    ----------
    path_or_text
        Path of the CSV file, or its text (anything containing a newline is taken as text).
        Columns ``ActorID, Age, Sex, Race, Ethnicity``; only ``ActorID`` and ``Sex`` are used.

    Returns
    -------
    dict[str, str]
        ``{"1001": "male", "1002": "female", ...}``; actors with any other ``Sex`` value are left out.

    Raises
    ------
    ValueError
        If the ``ActorID`` or ``Sex`` column is missing.
    """
    reader = csv.DictReader(io.StringIO(_read_text(path_or_text).lstrip("\ufeff")))
    columns = {name.strip(): name for name in reader.fieldnames or []}
    if "ActorID" not in columns or "Sex" not in columns:
        raise ValueError(
            f"CREMA-D demographics need columns ActorID and Sex, found {sorted(columns)}; "
            "pass CREMA-D's VideoDemographics.csv"
        )
    genders: dict[str, str] = {}
    for row in reader:
        actor = (row[columns["ActorID"]] or "").strip()
        gender = _GENDER_WORDS.get((row[columns["Sex"]] or "").strip().lower())
        if actor and gender is not None:
            genders[actor] = gender
    return genders


# --------------------------------------------------------------------------------------------
# User manifests

_MANIFEST_COLUMNS = ("path", "label", "speaker", "gender", "corpus")


def _normalised_uri(uri: str) -> str:
    """``uri`` without ``.``, ``..`` or doubled slashes; ``file:///x`` and ``file://localhost/x`` as ``file:/x``."""
    parts = urlsplit(uri)
    path = "/" + posixpath.normpath(parts.path).lstrip("/") if parts.path else ""
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
        query = "?" + parts.query if parts.query else ""
        return "file:" + path + query + ("#" + parts.fragment if parts.fragment else "")
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), path=path))


def _resolve(path: str, base: str) -> str:
    """A manifest's clip path made absolute against ``base`` and normalised (one spelling per file)."""
    if _URI_SCHEME.match(path):
        return _normalised_uri(path)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if _URI_SCHEME.match(base):
        parts = urlsplit(base)
        joined = posixpath.normpath(posixpath.join(parts.path or "/", path))
        return urlunsplit(parts._replace(path=joined)) if parts.netloc else f"{parts.scheme}:{joined}"
    return os.path.normpath(os.path.join(os.path.abspath(base), path))


def _cell(row: Mapping[str | None, str | None], known: Mapping[str, str], column: str) -> str:
    """Stripped text of a known manifest column, ``""`` when the column or the value is missing."""
    return (row.get(known[column]) or "").strip() if column in known else ""


def parse_manifest(text: str, *, base: str) -> list[ManifestEntry]:
    """Manifest rows from CSV text; see :func:`read_manifest` for the columns.

    Parameters
    ----------
    text
        The manifest's CSV text, header first.
    base
        Folder (local path or URI) that relative ``path`` values resolve against.

    Raises
    ------
    ValueError
        If the ``path`` or ``label`` column is missing, a row has an empty ``path``, or two rows
        list the same file (however its path is spelled: relative, absolute, ``file:`` URI).
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    known = {name.lower(): name for name in header if name.lower() in _MANIFEST_COLUMNS}
    if "path" not in known or "label" not in known:
        raise ValueError(f"a manifest needs the columns path and label, found {header}")
    extra = [name for name in header if name.lower() not in _MANIFEST_COLUMNS]
    unknown_genders: set[str] = set()
    entries = []
    lines = []
    for line, row in enumerate(reader, start=2):
        clip_path = _cell(row, known, "path")
        if not clip_path:
            raise ValueError(f"manifest line {line} has an empty path")
        raw_label = _cell(row, known, "label") or None
        gender_text = _cell(row, known, "gender")
        gender = _GENDER_WORDS.get(gender_text.lower()) if gender_text else None
        if gender_text and gender is None:
            unknown_genders.add(gender_text)
        lines.append(line)
        entries.append(
            ManifestEntry(
                path=_resolve(clip_path, base),
                label=normalise_label(raw_label) if raw_label else None,
                speaker=_cell(row, known, "speaker") or None,
                gender=gender,
                corpus=_cell(row, known, "corpus") or MANIFEST_CORPUS,
                raw_label=raw_label,
                meta={name: value for name in extra if (value := (row.get(name) or "").strip())},
            )
        )
    if unknown_genders:
        logger.warning(
            "manifest gender values %s are neither male nor female; read as unknown", sorted(unknown_genders)
        )
    _refuse_repeats(entries, lines)
    return entries


def _file_key(path: str) -> str:
    """One key per file for a resolved manifest path: local paths and ``file:`` URIs alike."""
    if path.startswith("file:"):
        return unquote(urlsplit(path).path)
    return path


def _refuse_repeats(entries: list[ManifestEntry], lines: list[int]) -> None:
    """Refuse a manifest that lists one file on more than one row, however its path is spelled.

    Raises
    ------
    ValueError
        Naming the first such file and the lines that list it.
    """
    rows: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        rows.setdefault(_file_key(entry.path), []).append(index)
    for indices in rows.values():
        if len(indices) < 2:
            continue
        numbers = [str(lines[index]) for index in indices]
        spelled = ", ".join(numbers[:-1]) + " and " + numbers[-1]
        which = "both list" if len(indices) == 2 else "all list"
        repeated = [entries[index] for index in indices]
        values = {(e.label, e.speaker, e.gender, e.corpus, tuple(sorted(e.meta.items()))) for e in repeated}
        if len(values) > 1:
            raise ValueError(
                f"manifest lines {spelled} {which} {repeated[0].path}, with different labels, speakers "
                "or other values; keep one row per file"
            )
        raise ValueError(f"manifest lines {spelled} {which} {repeated[0].path}; list each file once")


def read_manifest(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None) -> list[ManifestEntry]:
    """Read a user manifest: a CSV file that lists clips and their labels.

    Columns: ``path`` and ``label`` (required; an empty label means unlabelled), and optionally
    ``speaker``, ``gender`` (male/female, m/f) and ``corpus`` (default ``"manifest"``). Any other
    column goes into ``meta``. Labels go through :func:`normalise_label`; ``raw_label`` keeps the
    text as written.

    Parameters
    ----------
    path
        Local manifest file (a ``file:`` URI is accepted).
    base
        Folder or URI that relative clip paths resolve against; default the manifest's folder.

    Returns
    -------
    list[ManifestEntry]
        In file order; relative local paths become absolute plain paths, absolute paths and
        URIs keep their form; every path is normalised (``a/./b/../c`` → ``a/c``,
        ``file:///x`` → ``file:/x``).

    Raises
    ------
    ValueError
        As :func:`parse_manifest`: a missing column, an empty path, a file listed twice.
    """
    local = str(path)
    if local.startswith("file:"):
        local = unquote(urlsplit(local).path)
    try:
        with open(local, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {local}; pass the path of an existing CSV file") from None
    resolved_base = str(base) if base is not None else os.path.dirname(os.path.abspath(local))
    return parse_manifest(text, base=resolved_base)
