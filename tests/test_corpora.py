"""Corpus detection from file names and folders, CREMA-D demographics and user manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ser_udfs.corpora import (
    CANONICAL_LABELS,
    ClipInfo,
    ManifestEntry,
    load_cremad_demographics,
    normalise_label,
    parse_clip_path,
    read_manifest,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UNKNOWN = ClipInfo("unknown", None, None, None, None, {})


def test_canonical_labels() -> None:
    assert CANONICAL_LABELS == (
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


# ------------------------------------------------------------------------------------------ RAVDESS


def test_ravdess_fields() -> None:
    info = parse_clip_path("/data/Actor_12/03-01-05-01-02-01-12.wav")
    assert info == ClipInfo(
        corpus="ravdess",
        speaker="12",
        gender="female",
        label="angry",
        raw_label="05",
        meta={"modality": "03", "vocal_channel": "01", "intensity": "01", "statement": "02", "repetition": "01"},
    )


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("01", "neutral"),
        ("02", "calm"),
        ("03", "happy"),
        ("04", "sad"),
        ("05", "angry"),
        ("06", "fear"),
        ("07", "disgust"),
        ("08", "surprise"),
    ],
)
def test_ravdess_emotions(code: str, label: str) -> None:
    info = parse_clip_path(f"03-01-{code}-01-01-01-01.wav")
    assert (info.corpus, info.label, info.raw_label) == ("ravdess", label, code)


@pytest.mark.parametrize(("actor", "gender"), [("01", "male"), ("02", "female"), ("23", "male"), ("24", "female")])
def test_ravdess_gender_from_actor(actor: str, gender: str) -> None:
    info = parse_clip_path(f"03-01-02-02-01-02-{actor}.flac")
    assert (info.speaker, info.gender) == (actor, gender)


def test_ravdess_song_and_audio_video_modalities() -> None:
    info = parse_clip_path("01-02-06-02-02-02-07.wav")
    assert info.corpus == "ravdess"
    assert info.meta["modality"] == "01" and info.meta["vocal_channel"] == "02"


@pytest.mark.parametrize(
    "name",
    [
        "03-01-05-01-02-01-34.wav",  # actor 34
        "03-01-09-01-02-01-12.wav",  # emotion 09
        "03-01-05-01-02-01-00.wav",  # actor 00
        "03-01-05-01-03-01-12.wav",  # statement 03
        "03-01-05-01-02-03-12.wav",  # repetition 03
        "03-01-05-03-02-01-12.wav",  # intensity 03
        "04-01-05-01-02-01-12.wav",  # modality 04
        "03-03-05-01-02-01-12.wav",  # vocal channel 03
        "03-01-01-02-01-01-01.wav",  # RAVDESS has no strong neutral
        "03-01-05-01-02-01.wav",  # six fields
        "03-01-05-01-02-01-12-01.wav",  # eight fields
    ],
)
def test_seven_field_names_that_are_not_ravdess(name: str) -> None:
    assert parse_clip_path(name) == UNKNOWN


@pytest.mark.parametrize(
    "path",
    [
        "file:/data/Actor_12/03-01-05-01-02-01-12.wav",
        "file:///data/Actor_12/03-01-05-01-02-01-12.WAV",
        "hdfs://namenode:8020/corpora/ravdess/03-01-05-01-02-01-12.flac",
        "s3a://bucket/prefix/03-01-05-01-02-01-12.Ogg",
        "C:\\corpora\\Actor_12\\03-01-05-01-02-01-12.wav",
        "03-01-05-01-02-01-12",
    ],
)
def test_uris_extensions_and_separators(path: str) -> None:
    info = parse_clip_path(path)
    assert (info.corpus, info.speaker, info.label) == ("ravdess", "12", "angry")


def test_percent_encoded_uri_folder() -> None:
    info = parse_clip_path("file:/data/my%20savee/DC/a01.wav")
    assert (info.corpus, info.speaker) == ("savee", "DC")


# ------------------------------------------------------------------------------------------ CREMA-D


def test_cremad_without_demographics() -> None:
    info = parse_clip_path("hdfs://nn/crema/AudioWAV/1001_DFA_ANG_XX.wav")
    assert info == ClipInfo("crema-d", "1001", None, "angry", "ANG", {"sentence": "DFA", "intensity": "XX"})


@pytest.mark.parametrize(
    ("code", "label"),
    [("ANG", "angry"), ("DIS", "disgust"), ("FEA", "fear"), ("HAP", "happy"), ("NEU", "neutral"), ("SAD", "sad")],
)
@pytest.mark.parametrize("intensity", ["LO", "MD", "HI", "XX"])
def test_cremad_emotions_and_intensities(code: str, label: str, intensity: str) -> None:
    info = parse_clip_path(f"1091_ITS_{code}_{intensity}.wav")
    assert (info.corpus, info.speaker, info.label, info.raw_label) == ("crema-d", "1091", label, code)
    assert info.meta == {"sentence": "ITS", "intensity": intensity}


@pytest.mark.parametrize("name", ["1000_DFA_ANG_XX.wav", "1092_DFA_ANG_XX.wav", "1001_DFA_XYZ_XX.wav", "1001_DFA_ANG_ZZ.wav"])
def test_cremad_out_of_range(name: str) -> None:
    assert parse_clip_path(name) == UNKNOWN


def test_cremad_demographics_from_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "VideoDemographics.csv"
    csv_path.write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n"
        "1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n"
        "1003,21,Female,Caucasian,Not Hispanic\n",
        encoding="utf-8",
    )
    genders = load_cremad_demographics(csv_path)
    assert genders == {"1001": "male", "1002": "female", "1003": "female"}
    assert load_cremad_demographics(str(csv_path)) == genders
    assert parse_clip_path("1001_IEO_HAP_HI.wav", cremad_gender=genders).gender == "male"
    assert parse_clip_path("1002_IEO_HAP_HI.wav", cremad_gender=genders).gender == "female"
    assert parse_clip_path("1004_IEO_HAP_HI.wav", cremad_gender=genders).gender is None


def test_cremad_demographics_from_text_with_bom_and_spaces() -> None:
    text = "\ufeffActorID, Age, Sex, Race, Ethnicity\r\n1010, 42, Male ,Asian,Not Hispanic\r\n1011,30,,Asian,Unknown\r\n"
    assert load_cremad_demographics(text) == {"1010": "male"}


def test_cremad_demographics_missing_column() -> None:
    with pytest.raises(ValueError, match="ActorID and Sex"):
        load_cremad_demographics("ActorID,Age\n1001,51\n")


# ------------------------------------------------------------------------------------------ SAVEE


@pytest.mark.parametrize(
    ("path", "speaker", "label", "raw_label", "sentence"),
    [
        ("DC_a01.wav", "DC", "angry", "a", "01"),
        ("JE_sa01.wav", "JE", "sad", "sa", "01"),
        ("KL_su15.wav", "KL", "surprise", "su", "15"),
        ("JK_d03.flac", "JK", "disgust", "d", "03"),
        ("/x/DC_f02.WAV", "DC", "fear", "f", "02"),
        ("DC_h10.wav", "DC", "happy", "h", "10"),
        ("DC_n30.wav", "DC", "neutral", "n", "30"),
        ("/savee/AudioData/DC/a01.wav", "DC", "angry", "a", "01"),
        ("s3a://b/AudioData/JE/sa03.wav", "JE", "sad", "sa", "03"),
        ("file:/AudioData/KL/su15.wav", "KL", "surprise", "su", "15"),
    ],
)
def test_savee(path: str, speaker: str, label: str, raw_label: str, sentence: str) -> None:
    assert parse_clip_path(path) == ClipInfo("savee", speaker, "male", label, raw_label, {"sentence": sentence})


@pytest.mark.parametrize("path", ["AB_a01.wav", "/data/other/a01.wav", "a01.wav", "DC_x01.wav", "DC_a1.wav"])
def test_savee_lookalikes(path: str) -> None:
    assert parse_clip_path(path) == UNKNOWN


# ------------------------------------------------------------------------------------------ TESS


@pytest.mark.parametrize(
    ("name", "speaker", "word", "label", "raw_label"),
    [
        ("OAF_back_angry.wav", "OAF", "back", "angry", "angry"),
        ("YAF_bean_disgust.wav", "YAF", "bean", "disgust", "disgust"),
        ("OAF_chair_fear.wav", "OAF", "chair", "fear", "fear"),
        ("YAF_dog_happy.wav", "YAF", "dog", "happy", "happy"),
        ("OAF_home_neutral.wav", "OAF", "home", "neutral", "neutral"),
        ("YAF_germ_ps.wav", "YAF", "germ", "surprise", "ps"),
        ("OAF_youth_sad.WAV", "OAF", "youth", "sad", "sad"),
    ],
)
def test_tess(name: str, speaker: str, word: str, label: str, raw_label: str) -> None:
    info = parse_clip_path(f"/tess/{speaker}_x/{name}")
    assert info == ClipInfo("tess", speaker, "female", label, raw_label, {"word": word})


def test_tess_unknown_speaker_or_emotion() -> None:
    assert parse_clip_path("MAF_back_angry.wav") == UNKNOWN
    assert parse_clip_path("OAF_back_bored.wav") == UNKNOWN


# ------------------------------------------------------------------------------------------ EmoDB


@pytest.mark.parametrize(
    ("letter", "label"),
    [("W", "angry"), ("L", "boredom"), ("E", "disgust"), ("A", "fear"), ("F", "happy"), ("T", "sad"), ("N", "neutral")],
)
def test_emodb_emotions(letter: str, label: str) -> None:
    info = parse_clip_path(f"/emodb/wav/03a01{letter}a.wav")
    assert info == ClipInfo("emodb", "03", "male", label, letter, {"text": "a01", "version": "a"})


@pytest.mark.parametrize(
    ("speaker", "gender"),
    [
        *((speaker, "male") for speaker in ("03", "10", "11", "12", "15")),
        *((speaker, "female") for speaker in ("08", "09", "13", "14", "16")),
    ],
)
def test_emodb_speakers(speaker: str, gender: str) -> None:
    info = parse_clip_path(f"{speaker}b10Tc.wav")
    assert (info.corpus, info.speaker, info.gender, info.meta) == ("emodb", speaker, gender, {"text": "b10", "version": "c"})


@pytest.mark.parametrize("name", ["04a01Fa.wav", "03a11Fa.wav", "03c01Fa.wav", "03a01Xa.wav", "03a01FA.wav"])
def test_emodb_lookalikes(name: str) -> None:
    assert parse_clip_path(name) == UNKNOWN


# ------------------------------------------------------------------------------------------ unknown


@pytest.mark.parametrize(
    "path", ["", "/", "recording.wav", "hdfs://nn/calls/", "s3a://bucket/call-2024-01-01.mp3", "Actor_01/notes.txt"]
)
def test_unknown_names(path: str) -> None:
    assert parse_clip_path(path) == UNKNOWN


# ------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("Angry", "angry"),
        ("anger", "angry"),
        ("fearful", "fear"),
        ("FEAR", "fear"),
        ("happiness", "happy"),
        ("sadness", "sad"),
        ("pleasant surprise", "surprise"),
        ("Pleasant_Surprise", "surprise"),
        ("surprised", "surprise"),
        ("ps", "surprise"),
        ("calm", "calm"),
        ("disgusted", "disgust"),
        ("bored", "boredom"),
        (" Neutral ", "neutral"),
        ("Contempt", "contempt"),
        ("Frustrated Customer", "frustrated customer"),
    ],
)
def test_normalise_label(raw: str, label: str) -> None:
    assert normalise_label(raw) == label


def test_normalise_label_canonical_labels_are_fixed_points() -> None:
    assert [normalise_label(label) for label in CANONICAL_LABELS] == list(CANONICAL_LABELS)


def test_normalise_label_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalise_label("  ")


# ------------------------------------------------------------------------------------------ manifests


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_all_columns(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "corpus" / "manifest.csv",
        "path,label,speaker,gender,corpus,session,channel\n"
        "audio/03-01-01-01-01-01-01.wav,Happy,spk-1,F,my-corpus,s1,left\n"
        "./audio/b.flac,anger,spk-2,male,my-corpus,,right\n"
        "../elsewhere/c.wav,,spk-2,m,other,s2,\n",
    )
    entries = read_manifest(manifest)
    root = str(tmp_path)
    assert entries == [
        ManifestEntry(
            path=os.path.join(root, "corpus", "audio", "03-01-01-01-01-01-01.wav"),
            label="happy",
            speaker="spk-1",
            gender="female",
            corpus="my-corpus",
            raw_label="Happy",
            meta={"session": "s1", "channel": "left"},
        ),
        ManifestEntry(
            path=os.path.join(root, "corpus", "audio", "b.flac"),
            label="angry",
            speaker="spk-2",
            gender="male",
            corpus="my-corpus",
            raw_label="anger",
            meta={"channel": "right"},
        ),
        ManifestEntry(
            path=os.path.join(root, "elsewhere", "c.wav"),
            label=None,
            speaker="spk-2",
            gender="male",
            corpus="other",
            raw_label=None,
            meta={"session": "s2"},
        ),
    ]


def test_manifest_label_wins_over_a_ravdess_like_name(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "path,label\n03-01-01-01-01-01-01.wav,happy\n")
    [entry] = read_manifest(manifest)
    info = entry.clip_info()
    assert info == ClipInfo("manifest", None, None, "happy", "happy", {})
    assert parse_clip_path(entry.path).label == "neutral"  # what the name alone would have said


def test_manifest_only_required_columns(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "path,label\nx.wav,sad\ny.wav,\n")
    entries = read_manifest(str(manifest))
    assert [(e.path, e.label, e.speaker, e.gender, e.corpus, e.raw_label, e.meta) for e in entries] == [
        (str(tmp_path / "x.wav"), "sad", None, None, "manifest", "sad", {}),
        (str(tmp_path / "y.wav"), None, None, None, "manifest", None, {}),
    ]


def test_manifest_keeps_absolute_paths_and_uris(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv",
        "path,label\n/abs/a.wav,calm\nhdfs://nn/data/b.wav,calm\nfile:/data/c.wav,calm\ns3a://bucket/d.wav,calm\n",
    )
    assert [e.path for e in read_manifest(manifest)] == [
        "/abs/a.wav",
        "hdfs://nn/data/b.wav",
        "file:/data/c.wav",
        "s3a://bucket/d.wav",
    ]


def test_manifest_base_override(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "path,label\naudio/a.wav,calm\n../b.wav,calm\n")
    assert [e.path for e in read_manifest(manifest, base="hdfs://nn/corpus/")] == [
        "hdfs://nn/corpus/audio/a.wav",
        "hdfs://nn/b.wav",
    ]
    assert [e.path for e in read_manifest(manifest, base="file:/corpus")] == ["file:/corpus/audio/a.wav", "file:/b.wav"]
    assert [e.path for e in read_manifest(manifest, base=tmp_path / "local")] == [
        str(tmp_path / "local" / "audio" / "a.wav"),
        str(tmp_path / "b.wav"),
    ]


def test_manifest_read_from_file_uri_with_bom_and_header_case(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "\ufeff Path , LABEL ,Speaker\r\na.wav, Fearful ,s9\r\n")
    [entry] = read_manifest(f"file:{manifest}")
    assert (entry.path, entry.label, entry.raw_label, entry.speaker) == (str(tmp_path / "a.wav"), "fear", "Fearful", "s9")


def test_manifest_unrecognised_gender_is_unknown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = _write(tmp_path / "m.csv", "path,label,gender\na.wav,sad,other\n")
    with caplog.at_level("WARNING", logger="ser_udfs.corpora"):
        [entry] = read_manifest(manifest)
    assert entry.gender is None
    assert "other" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.wav,sad\n", "path and label"),
        ("path,speaker\na.wav,s1\n", "path and label"),
        ("path,label\na.wav,sad\n,sad\n", "line 3 has an empty path"),
    ],
)
def test_manifest_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_manifest(_write(tmp_path / "m.csv", text))


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_shared_ravdess_names() -> None:
    root = SHARED_DATA / "ravdess-speech-16k"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    files = sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))
    infos = [parse_clip_path(path.as_uri()) for path in files]
    assert len(files) == 1434
    assert {info.corpus for info in infos} == {"ravdess"}
    assert all(info.speaker == path.parent.name.removeprefix("Actor_") for path, info in zip(files, infos))
    assert {info.speaker for info in infos} == {f"{actor:02d}" for actor in range(1, 25)}
    assert all(info.gender == ("male" if int(info.speaker) % 2 else "female") for info in infos)
    assert {info.label for info in infos} == set(CANONICAL_LABELS) - {"boredom"}


@pytest.mark.realdata
def test_shared_banglaser_manifest() -> None:
    manifest = SHARED_DATA / "banglaser-16k" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent")
    entries = read_manifest(manifest)
    assert len(entries) == 1466
    assert {entry.corpus for entry in entries} == {"banglaser"}
    assert len({entry.speaker for entry in entries}) == 34
    assert {entry.label for entry in entries} == {"happy", "sad", "angry", "surprise", "neutral"}
    assert all(Path(entry.path).is_file() for entry in entries)
    assert all(set(entry.meta) == {"intensity"} for entry in entries)


def test_manifest_normalises_each_spelling_of_a_path(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv",
        "path,label\n/abs/./clips/../clips/a.wav,calm\nhdfs://nn/data/x/../b.wav,calm\nfile:///data/c.wav,calm\n",
    )
    assert [e.path for e in read_manifest(manifest)] == ["/abs/clips/a.wav", "hdfs://nn/data/b.wav", "file:/data/c.wav"]


def test_manifest_refuses_a_file_listed_twice_with_different_labels(tmp_path: Path) -> None:
    clip = tmp_path / "clips" / "a.wav"
    manifest = _write(
        tmp_path / "m.csv",
        f"path,label,speaker\nclips/a.wav,happy,s1\n{clip},angry,s1\nfile://{clip},sad,s1\n"
        "./clips/../clips/a.wav,happy,s2\nclips/b.wav,sad,s1\n",
    )
    refusal = r"manifest lines 2, 3, 4 and 5 all list .*/clips/a\.wav, with different labels, speakers"
    with pytest.raises(ValueError, match=refusal):
        read_manifest(manifest)


def test_manifest_refuses_exact_repeats_too(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "path,label\na.wav,happy\nb.wav,sad\n./a.wav,happy\n")
    with pytest.raises(ValueError, match=r"manifest lines 2 and 4 both list .*/a\.wav; list each file once"):
        read_manifest(manifest)
