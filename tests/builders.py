"""Builders shared by the tests: tiny bundles, encoders, calls and feature frames, and one way to
compare tables.

Everything here is built from the project's own training and synthesis code on small generated
data, offline, in well under a second (the encoder and the call bundle in a few).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ser_udfs.audio.decode import decode_audio
from ser_udfs.audio.preprocess import condition_clip, to_mono_target_rate
from ser_udfs.calls.stream import ChannelScores, WindowGeometry
from ser_udfs.calls.tables import probability_column
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.features.config import AudioConfig, FeatureConfig
from ser_udfs.synthetic.calls import Turn, synth_call, write_call
from training.models.embedding_head import EmbeddingHeadTrainConfig, HeadConfig
from training.splits import SplitConfig

# --- tables ------------------------------------------------------------------------------------


def assert_tables_equal(
    actual: pd.DataFrame,
    expected: pd.DataFrame,
    *,
    sort_by: Sequence[str] | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    obj: str = "table",
) -> None:
    """Fail unless two tables hold the same columns and rows, in the style of
    ``pyspark.testing.assertDataFrameEqual``.

    Parameters
    ----------
    actual, expected
        The tables, as pandas frames (``spark_frame.toPandas()``, ``pd.read_parquet(path)``).
    sort_by
        Columns to order both tables by first, for outputs whose row order is not part of the
        contract; ``None`` compares rows in the order given.
    rtol, atol
        Tolerances for floating-point columns and array cells (0: exactly equal).
    obj
        What the tables are, for the failure message.
    """
    assert list(actual.columns) == list(expected.columns), (
        f"{obj}: columns differ: {list(actual.columns)} against {list(expected.columns)}"
    )
    assert len(actual) == len(expected), f"{obj}: {len(actual)} rows against {len(expected)}"
    if sort_by:
        actual = actual.sort_values(list(sort_by), kind="stable").reset_index(drop=True)
        expected = expected.sort_values(list(sort_by), kind="stable").reset_index(drop=True)
    else:
        actual, expected = actual.reset_index(drop=True), expected.reset_index(drop=True)
    for column in actual.columns:
        for row, (got, want) in enumerate(zip(actual[column], expected[column])):
            assert _cells_equal(got, want, rtol=rtol, atol=atol), (
                f"{obj}: column {column!r}, row {row}: {got!r} against {want!r}"
            )


def _cells_equal(got: object, want: object, *, rtol: float, atol: float) -> bool:
    if isinstance(got, Mapping) or isinstance(want, Mapping):
        return isinstance(got, Mapping) and isinstance(want, Mapping) and set(got) == set(want) and all(
            _cells_equal(got[key], want[key], rtol=rtol, atol=atol) for key in got
        )
    if isinstance(got, (list, tuple, np.ndarray)) or isinstance(want, (list, tuple, np.ndarray)):
        if got is None or want is None or len(got) != len(want):
            return False
        return all(_cells_equal(a, b, rtol=rtol, atol=atol) for a, b in zip(got, want))
    if got is None or want is None or (pd.api.types.is_scalar(got) and pd.isna(got)):
        return (got is None or pd.isna(got)) and (want is None or (pd.api.types.is_scalar(want) and pd.isna(want)))
    if isinstance(got, (float, np.floating)) or isinstance(want, (float, np.floating)):
        return bool(np.isclose(float(got), float(want), rtol=rtol, atol=atol))
    return bool(got == want)


# --- call scoring ------------------------------------------------------------------------------

CALL_LABELS = ("angry", "sad")
#: Channel 0 angry, channel 1 sad, never at the same time.
STEREO_TURNS = [
    Turn(0, 1.0, 4.0, "angry"),
    Turn(1, 5.0, 8.0, "sad"),
    Turn(0, 9.0, 12.0, "angry"),
    Turn(1, 13.0, 16.5, "sad"),
]


def two_turn_channel() -> tuple[WindowGeometry, ChannelScores]:
    """Channel "1" of a 10 s call at 10 Hz: turns 1-5.5 s (two windows: angry, sad) and 8-9 s (no window)."""
    geometry = WindowGeometry(sample_rate=10, window_samples=30, hop_samples=15, min_speech_samples=5)
    channel = ChannelScores(
        name="1",
        n_samples=100,
        regions=np.array([[10, 55], [80, 90]]),
        windows=np.array([[10, 40], [25, 55]]),
        turns=np.array([0, 0]),
        probabilities=np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32),
    )
    return geometry, channel


def scored_windows(mono: np.ndarray, config: FeatureConfig) -> list[tuple[tuple[int, int], np.ndarray]]:
    """What call scoring feeds the model from a channel ``[n]`` at the model's rate: each window of
    each detected turn (:func:`ser_udfs.calls.stream.turn_windows`), conditioned as a clip."""
    from ser_udfs.audio.vad import VadConfig, detect_speech
    from ser_udfs.calls.config import WindowConfig
    from ser_udfs.calls.stream import turn_windows, window_geometry

    geometry = window_geometry(config, WindowConfig())
    rate = config.audio.target_sample_rate_hz
    return [((start, end), condition_clip(mono[start:end], config.audio))
            for turn in detect_speech(mono, rate, VadConfig()).tolist() for start, end in turn_windows(*turn, geometry)]


def call_bundle(directory: Path) -> Path:
    """A logreg bundle that tells angry from sad telephone speech of both channels' voices.

    Trained with the training code's own functions on the windows scoring cuts from the detected
    turns of calls rendered like the test calls (8 kHz, telephone band, the four telephone
    encodings; turns of 3 and 3.5 s), so scoring tests check the pipeline, not the model.
    """
    from training.bundle.load import save_bundle
    from training.models.logreg import LogregConfig, fit_logreg
    from training.taxonomy import Taxonomy

    config = FeatureConfig()
    clips, targets = [], []
    for target, label in enumerate(CALL_LABELS):
        for channel in (0, 1):
            for seed in range(4):
                length_s = (3.0, 3.5)[seed % 2]
                call = synth_call([Turn(channel, 1.0, 1.0 + length_s, label)], duration_s=6.0, channels=2, seed=50 + seed)
                encoding = ("pcm16", "ulaw", "gsm", "alaw")[seed]  # GSM 6.10 WAV is mono only: write the channel
                with tempfile.TemporaryDirectory() as scratch:
                    written = write_call(Path(scratch) / f"train.{encoding}.wav", call[channel], 8000, encoding=encoding)
                    mono = to_mono_target_rate(decode_audio(written)[0], 8000, config.audio)
                units = scored_windows(mono, config)
                clips += [clip for _, clip in units]
                targets += [target] * len(units)
    stats = compute_features_batch(np.stack(clips), 16000, config)["stats"]
    model = fit_logreg(stats, np.array(targets), n_classes=len(CALL_LABELS), config=LogregConfig(), seed=0)
    return save_bundle(
        directory, model=model, taxonomy=Taxonomy("test", CALL_LABELS), labels=CALL_LABELS, feature_config=config,
        training={"note": "tests"}, metrics={},
    )


#: Spectral tilt of the voices of the speaker-adaptation tests: a pre-emphasis ("bright") on top of
#: the synthetic voice is an offset that moves every stats vector of the speaker across the
#: angry-vs-sad boundary of a model trained on plain voices.
SPEAKER_TILTS = {"bright": ([1.0, -0.7], [1.0]), "plain": ([1.0], [1.0])}


def speaker_channel(turns_emotions: Sequence[str], *, speaker: int, tilt: str, seed: int, turn_s: float = 2.5,
                    pause_s: float = 1.0, lead_s: float = 0.5) -> tuple[np.ndarray, list[Turn]]:
    """One speaker's channel at 8 kHz: the emotions as turns, through the speaker's tilt.

    Returns the channel ``[n]`` (float32) and its turns. ``speaker`` picks the synthetic voice
    (a channel number of :func:`ser_udfs.synthetic.calls.synth_call`).
    """
    from scipy import signal

    turns = speaker_turns(turns_emotions, turn_s=turn_s, pause_s=pause_s, lead_s=lead_s)
    duration_s = lead_s + len(turns) * (turn_s + pause_s)
    call = synth_call([Turn(speaker, t.start_s, t.end_s, t.emotion) for t in turns], duration_s=duration_s,
                      channels=speaker + 1, seed=seed)[speaker]
    numerator, denominator = SPEAKER_TILTS[tilt]
    tilted = signal.lfilter(numerator, denominator, call)
    tilted *= 0.5 / max(1e-6, float(np.max(np.abs(tilted))))
    return tilted.astype(np.float32), turns


def speaker_turns(emotions: Sequence[str], *, turn_s: float = 2.5, pause_s: float = 1.0,
                  lead_s: float = 0.5) -> list[Turn]:
    """The turns of :func:`speaker_channel` (on channel 0)."""
    return [Turn(0, lead_s + k * (turn_s + pause_s), lead_s + k * (turn_s + pause_s) + turn_s, emotion)
            for k, emotion in enumerate(emotions)]


def turn_label(turns: Sequence[Turn], time_s: float) -> str | None:
    """The emotion of the turn nearest ``time_s`` within 0.3 s (VAD padding), or None."""
    for turn in turns:
        if turn.start_s - 0.3 <= time_s <= turn.end_s + 0.3:
            return turn.emotion
    return None


def two_speaker_call(*, seed: int = 5) -> np.ndarray:
    """A stereo 8 kHz call ``[2, n]``: a plain voice on channel 0, a bright one on channel 1, each
    with eight turns alternating angry and sad (channel 1 starts with sad); see
    :func:`two_speaker_turns`."""
    channels = [speaker_channel(emotions, speaker=speaker, tilt=tilt, seed=seed + index)[0]
                for index, (speaker, tilt, emotions) in enumerate(_TWO_SPEAKERS)]
    call = np.zeros((2, max(channel.size for channel in channels)), dtype=np.float32)
    for index, channel in enumerate(channels):
        call[index, : channel.size] = channel
    return call


def two_speaker_turns() -> list[list[Turn]]:
    """The turns of each channel of :func:`two_speaker_call` (``Turn.channel`` is 0 in both)."""
    return [speaker_turns(emotions) for _, _, emotions in _TWO_SPEAKERS]


_TWO_SPEAKERS = [
    (9, "plain", [CALL_LABELS[k % 2] for k in range(8)]),
    (10, "bright", [CALL_LABELS[(k + 1) % 2] for k in range(8)]),
]


def adaptive_call_bundles(directory: Path) -> tuple[Path, Path]:
    """Two bundles of the speaker-adaptation tests, trained on the same turn windows of speakers of
    every tilt: a CNN fused with a logreg on stats standardised per speaker (the CNN's classifier
    is zero, so it says nothing: the fused model's label is the stats model's, and the fallback
    is uniform) and a logreg on the stats with global standardisation."""
    from training.bundle.load import save_bundle
    from training.models.cnn import CnnConfig, build_model
    from training.models.fusion import FusedModel
    from training.models.logreg import LogregConfig, fit_logreg
    from training.speaker_norm import speaker_standardise
    from training.taxonomy import Taxonomy

    config = FeatureConfig()
    rate = config.audio.target_sample_rate_hz
    clips, targets, speakers = [], [], []
    for speaker, tilt in enumerate(("plain",) * 6):  # the offset of a bright voice is never seen in training
        channel, turns = speaker_channel([CALL_LABELS[k % 2] for k in range(8)], speaker=2 + speaker, tilt=tilt,
                                         seed=70 + speaker)
        for (start, end), clip in scored_windows(to_mono_target_rate(channel[None, :], 8000, config.audio), config):
            clips.append(clip)
            targets.append(CALL_LABELS.index(turn_label(turns, (start + end) / 2 / rate)))
            speakers.append(speaker)
    stats = compute_features_batch(np.stack(clips), rate, config)["stats"]
    targets_array, speakers_array = np.array(targets), np.array(speakers)
    taxonomy = Taxonomy("test", CALL_LABELS)
    adaptive_stats = fit_logreg(speaker_standardise(stats, speakers_array), targets_array, n_classes=2,
                                config=LogregConfig(), seed=0)
    cnn_config = CnnConfig(channels=(4, 8))
    log_mel = compute_features_batch(np.stack(clips[:2]), rate, config)["log_mel"]
    cnn = build_model(cnn_config, input_rows=(log_mel.shape[1],), n_classes=2, train_features=log_mel, seed=0)
    with torch.no_grad():
        cnn.classifier.weight.zero_()
        cnn.classifier.bias.zero_()
    adaptive = save_bundle(
        directory / "adaptive", model=FusedModel(cnn, adaptive_stats, 0.5), taxonomy=taxonomy, labels=CALL_LABELS,
        feature_config=config, training={"note": "tests"}, metrics={}, stats_normalisation="speaker",
    )
    global_model = fit_logreg(stats, targets_array, n_classes=2, config=LogregConfig(), seed=0)
    plain = save_bundle(directory / "global", model=global_model, taxonomy=taxonomy, labels=CALL_LABELS,
                        feature_config=config, training={"note": "tests"}, metrics={})
    return adaptive, plain


def random_logreg_bundle(directory: Path) -> Path:
    from ser_udfs.features.config import FeatureConfig
    from training.bundle.load import save_bundle
    from training.models.logreg import LogregModel
    from training.taxonomy import Taxonomy

    rng = np.random.default_rng(0)
    n_stats = 20
    model = LogregModel(
        mean=np.zeros(n_stats), scale=np.ones(n_stats), coef=rng.standard_normal((2, n_stats)), intercept=np.zeros(2)
    )
    return save_bundle(
        directory, model=model, taxonomy=Taxonomy("test", ("angry", "sad")), labels=("angry", "sad"),
        feature_config=FeatureConfig(), training={"note": "tests"}, metrics={},
    )


# --- transformers ------------------------------------------------------------------------------

ENCODER_SAMPLE_RATE = 16000
ENCODER_CLIP_SAMPLES = 8000
WAVEFORM_FEATURE_CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=ENCODER_CLIP_SAMPLES / ENCODER_SAMPLE_RATE))


def save_tiny_encoder(
    directory: Path,
    *,
    with_mask: bool = True,
    id2label: Mapping[int, str] | None = None,
    sampling_rate: int = ENCODER_SAMPLE_RATE,
    model_type: str = "wav2vec2",
    seed: int = 0,
) -> Path:
    """A 2-layer, hidden-32 encoder (with a classification head when ``id2label`` is given) and its extractor."""
    import transformers

    torch.manual_seed(seed)
    config_class = {"wav2vec2": transformers.Wav2Vec2Config, "wavlm": transformers.WavLMConfig,
                    "hubert": transformers.HubertConfig}[model_type]
    config = config_class(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_kernel=(10, 4), conv_stride=(10, 4), conv_bias=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=16,
        feat_extract_norm="layer" if with_mask else "group", do_stable_layer_norm=with_mask,
        **({"id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    if id2label:
        model = transformers.AutoModelForAudioClassification.from_config(config)
        config.architectures = [type(model).__name__]
    else:
        model = transformers.AutoModel.from_config(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=sampling_rate, do_normalize=True, return_attention_mask=with_mask
    ).save_pretrained(directory)
    return directory


def tone_clip(frequency_hz: float, rng: np.random.Generator, *, samples: int = ENCODER_CLIP_SAMPLES) -> np.ndarray:
    """A tone with noise, of random length, centred in zero padding (like a preprocessed clip)."""
    length = int(rng.integers(samples // 2, samples))
    time = np.arange(length) / ENCODER_SAMPLE_RATE
    wave = np.sin(2 * np.pi * frequency_hz * time + rng.uniform(0, 2 * np.pi)) + 0.1 * rng.normal(size=length)
    clip = np.zeros(samples, dtype=np.float32)
    offset = (samples - length) // 2
    clip[offset : offset + length] = 0.9 * wave / np.abs(wave).max()
    return clip


def synthetic_waveform_frame(*, n_speakers: int = 4, clips_per_label: int = 4, seed: int = 0) -> pd.DataFrame:
    """Features rows with waveforms: ``angry`` clips are high tones, ``sad`` clips low tones."""
    rng = np.random.default_rng(seed)
    rows = []
    for speaker in range(n_speakers):
        for label, (low, high) in (("angry", (1500, 2500)), ("sad", (150, 300))):
            for clip in range(clips_per_label):
                rows.append({
                    "clip_id": f"{speaker}{label}{clip}", "path": f"file:/synth/s{speaker}/{label}_{clip}.wav",
                    "corpus": "synth", "speaker": str(speaker), "gender": None, "label": label, "raw_label": label,
                    "augmentation": None, "feature_config_version": WAVEFORM_FEATURE_CONFIG.version(),
                    "waveform": tone_clip(rng.uniform(low, high), rng),
                })
    return pd.DataFrame(rows)


def embedding_head_config(model: str = "embed-logreg", layer: int = -1) -> EmbeddingHeadTrainConfig:
    return EmbeddingHeadTrainConfig(
        model=model, taxonomy="basic4", seed=1, split=SplitConfig(folds=2),
        head=HeadConfig(layer=layer, max_epochs=30, patience=10, validation_fraction=0.34, mlp_hidden_units=8),
    )


# --- extraction jobs -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
#: RAVDESS emotion codes of :func:`write_small_corpus`'s clips.
SMALL_CORPUS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def write_small_corpus(root: Path) -> Path:
    """Eight RAVDESS-named 1 s clips of two actors and two bad files (empty, silent): ten listed files."""
    import soundfile as sf

    from ser_udfs.synthetic.speech import synth_utterance

    for actor in (1, 2):
        for code, emotion in SMALL_CORPUS_EMOTIONS.items():
            wave = synth_utterance(emotion, speaker_seed=actor, utterance_seed=int(code), duration_s=1.0)
            folder = root / f"Actor_{actor:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"03-01-{code}-01-01-01-{actor:02d}.wav", wave, 16000)
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "silent.wav", np.zeros(16000, np.float32), 16000)
    return root


def extraction_args(corpus: Path, output: Path, *overrides: str) -> list[str]:
    """``jobs/extract_features.py`` arguments for ``corpus`` → ``output`` (32 mels), plus ``--set`` overrides."""
    argv = ["--input", str(corpus), "--output", str(output), "--log-level", "WARNING", "--set", "mel.n_mels=32"]
    for override in overrides:
        argv += ["--set", override]
    return argv


def start_job(
    module: str, argv: Sequence[str], log: Path, env: Mapping[str, str], *, master: str = "local[2]"
) -> subprocess.Popen[bytes]:
    """A job (``jobs.<module>``) as its own process group (Python driver, JVM, Python workers), output to ``log``."""
    environment = {
        **os.environ, "SER_SPARK_MASTER": master, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, **env,
    }
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", f"jobs.{module}", *argv],
            cwd=REPO, env=environment, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_for_staged_files(job: subprocess.Popen[bytes], output: Path, log: Path) -> None:
    """Return once ``job`` holds the lock of ``output`` and has staged a file (fails after 240 s)."""
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        if (output / "_lock.json").exists() and [p for p in output.glob("_staging-*/**/*") if p.is_file()]:
            return
        time.sleep(0.2)
    raise AssertionError("the job did not start writing in time:\n" + log.read_text()[-3000:])


def start_extraction_job(
    corpus: Path, output: Path, log: Path, env: Mapping[str, str], *overrides: str, master: str = "local[2]"
) -> subprocess.Popen[bytes]:
    """The extraction job of :func:`extraction_args` as its own process group (:func:`start_job`)."""
    return start_job("extract_features", extraction_args(corpus, output, *overrides), log, env, master=master)


# --- scoring outputs, for the run report (tables of jobs/score_calls.py, by hand) ---------------
#: Labels of the hand-made scoring outputs (``prob_<label>`` columns in this order).
SCORING_LABELS = ("angry", "happy", "neutral", "sad")
SCORING_MODEL_ID = "model-0123abcd"
_NEGATIVE = {"angry", "sad"}


@dataclass(frozen=True)
class ScoredCall:
    """One call of a hand-made scoring output.

    ``channels`` are ``(channel, role)`` pairs; ``labels`` the two labels each channel's two
    scored turns take (``"uncertain"`` allowed); ``reasons`` the escalation reasons that fired.
    """

    call_id: str
    path: str
    escalation_score: float
    duration_s: float = 30.0
    channels: tuple[tuple[int, str], ...] = ((0, "agent"), (1, "customer"))
    labels: tuple[tuple[str, str], ...] = (("neutral", "happy"), ("angry", "angry"))
    reasons: tuple[str, ...] = ()
    overlap_s: float = 1.5
    status: str = "ok"
    details: dict[str, str] = field(default_factory=dict)


def _channel_tiles(call: ScoredCall, index: int) -> list[tuple[float, float, bool, str | None]]:
    """``(start_s, end_s, speech, label)`` tiling ``0..duration`` for the ``index``-th channel."""
    if call.status == "no_speech":
        return [(0.0, call.duration_s, False, None)]
    first, second = call.labels[index]
    late = 14.0 + 4.0 * index
    return [(0.0, 2.0, False, None), (2.0, 8.0, True, first), (8.0, 10.0, True, None), (10.0, late, False, None),
            (late, call.duration_s, True, second)]


def scoring_tables(calls: Sequence[ScoredCall], errors: Sequence[tuple[str, str]] = (),
                   labels: Sequence[str] = SCORING_LABELS) -> dict[str, list[dict]]:
    """The five tables of a scoring output (rows as dicts, spec column order) for ``calls``;
    ``errors`` are ``(path, error_kind)`` of calls that could not be scored."""
    tables: dict[str, list[dict]] = {name: [] for name in ("segments", "turns", "channels", "calls", "errors")}
    for call in calls:
        _add_call(tables, call, labels)
    for path, kind in errors:
        tables["errors"].append({"path": path, "call_id": f"err-{len(tables['errors'])}", "error_kind": kind,
                                 "error_message": f"{path} could not be read ({kind})", "model_id": SCORING_MODEL_ID})
    return tables


def _label_probabilities(label: str | None, speech: bool, labels: Sequence[str]) -> dict[str, float | None]:
    names = [probability_column(name) for name in labels]
    if not speech or label is None:
        return dict.fromkeys(names)
    if label not in labels:  # uncertain: flat
        return dict.fromkeys(names, 1.0 / len(labels))
    rest = 0.3 / (len(labels) - 1)
    return {name: 0.7 if name == probability_column(label) else rest for name in names}


def _add_call(tables: dict[str, list[dict]], call: ScoredCall, labels: Sequence[str]) -> None:
    base = {"call_id": call.call_id, "path": call.path}
    channel_talk = []
    for index, (channel, role) in enumerate(call.channels):
        tiles = _channel_tiles(call, index)
        turn = -1
        previous_speech = False
        labelled = {"all": 0.0, "negative": 0.0}
        for start, end, speech, label in tiles:
            if speech and not previous_speech:
                turn += 1
            previous_speech = speech
            tables["segments"].append({
                **base, "channel": channel, "role": role, "start_s": start, "end_s": end,
                "start_ms": int(start * 1000), "end_ms": int(end * 1000), "speech": speech,
                "turn": turn if speech else None, "label": label, "confidence": 0.7 if label else None,
                **_label_probabilities(label, speech, labels), "model_id": SCORING_MODEL_ID,
            })
            if speech and label in labels:
                labelled["all"] += end - start
                labelled["negative"] += (end - start) if label in _NEGATIVE else 0.0
            if speech and label:
                tables["turns"].append({
                    **base, "channel": channel, "role": role, "turn": turn, "start_s": start, "end_s": end,
                    "start_ms": int(start * 1000), "end_ms": int(end * 1000), "duration_s": end - start, "windows": 2,
                    "label": label, "confidence": 0.7, **_label_probabilities(label, speech, labels),
                    "overlap_s": None if len(call.channels) == 1 else 0.0,
                    "overlaps": None if len(call.channels) == 1 else False,
                    "interruption": None if len(call.channels) == 1 else False, "model_id": SCORING_MODEL_ID,
                })
        talk_s = sum(end - start for start, end, speech, _ in tiles if speech)
        channel_talk.append(talk_s)
        scored_labels = [label for _, _, speech, label in tiles if speech and label in labels]
        negative_share = labelled["negative"] / labelled["all"] if labelled["all"] else None
        tables["channels"].append({
            **base, "channel": channel, "role": role, "talk_s": talk_s, "talk_share": None,
            "turn_count": turn + 1, "mean_turn_s": talk_s / (turn + 1) if turn >= 0 else 0.0,
            "longest_turn_s": max((end - start for start, end, speech, _ in tiles if speech), default=0.0),
            "interruptions": None if len(call.channels) == 1 else 0, "windows": 4, "adaptation": "none",
            "emotion_share": [(label, 1.0 / len(scored_labels)) for label in scored_labels] if scored_labels else [],
            "uncertain_s": sum(end - start for start, end, _, label in tiles if label == "uncertain"),
            "dominant_emotion": scored_labels[-1] if scored_labels else None, "negative_share": negative_share,
            "negative_share_first_third": negative_share, "negative_share_last_third": negative_share,
            "longest_negative_s": labelled["negative"],
            "ended_negative": None if not scored_labels else scored_labels[-1] in _NEGATIVE, "model_id": SCORING_MODEL_ID,
        })
    total_talk = sum(channel_talk)
    for row, talk_s in zip(tables["channels"][-len(call.channels):], channel_talk):
        row["talk_share"] = talk_s / total_talk if total_talk else 0.0
    two = len(call.channels) > 1
    tables["calls"].append({
        **base, "duration_s": call.duration_s, "sample_rate": 8000, "channels": len(call.channels),
        "encoding": "PCM_16", "scored_channels": [channel for channel, _ in call.channels], "windows_scored": 4,
        "talk_s": max(channel_talk), "silence_s": call.duration_s - max(channel_talk),
        "overlap_s": call.overlap_s if two else None, "interruptions": 0 if two else None,
        "median_reply_gap_s": 0.8 if two else None, "emotion_share": [("angry", 0.5), ("neutral", 0.5)],
        "uncertain_s": 0.0, "dominant_emotion": None if call.status == "no_speech" else "angry",
        "negative_stretches": [] if call.status == "no_speech" else [
            {"channel": call.channels[-1][0], "role": call.channels[-1][1], "start_s": 2.0, "end_s": 8.0,
             "label": "angry", "confidence": 0.7}],
        "escalation_score": call.escalation_score,
        "escalation_reasons": [
            {"reason": reason, "value": 0.8, "threshold": 0.5,
             "detail": call.details.get(reason, f"{reason.replace('_', ' ')} in call {call.call_id}: 0.80 over 0.50.")}
            for reason in call.reasons],
        "analytics_note": None if two else "one scored channel: no overlap, interruptions or reply gaps.",
        "model_id": SCORING_MODEL_ID, "status": call.status,
    })


def _scoring_schemas(labels: Sequence[str]) -> dict[str, pa.Schema]:
    """The Arrow schemas of the scoring tables, as the spec types them."""
    string, double, int32, int64, boolean = pa.string(), pa.float64(), pa.int32(), pa.int64(), pa.bool_()
    probabilities = [(probability_column(label), double) for label in labels]
    timing = [("start_s", double), ("end_s", double), ("start_ms", int64), ("end_ms", int64)]
    shares = pa.map_(string, double)
    stretch = pa.struct([("channel", int32), ("role", string), ("start_s", double), ("end_s", double),
                         ("label", string), ("confidence", double)])
    reason = pa.struct([("reason", string), ("value", double), ("threshold", double), ("detail", string)])
    who = [("call_id", string), ("path", string), ("channel", int32), ("role", string)]
    return {name: pa.schema(fields) for name, fields in {
        "segments": [*who, *timing, ("speech", boolean), ("turn", int32), ("label", string), ("confidence", double),
                     *probabilities, ("model_id", string)],
        "turns": [*who, ("turn", int32), *timing, ("duration_s", double), ("windows", int32), ("label", string),
                  ("confidence", double), *probabilities, ("overlap_s", double), ("overlaps", boolean),
                  ("interruption", boolean), ("model_id", string)],
        "channels": [*who, ("talk_s", double), ("talk_share", double), ("turn_count", int32), ("mean_turn_s", double),
                     ("longest_turn_s", double), ("interruptions", int32), ("windows", int32), ("adaptation", string),
                     ("emotion_share", shares), ("uncertain_s", double), ("dominant_emotion", string),
                     ("negative_share", double), ("negative_share_first_third", double),
                     ("negative_share_last_third", double), ("longest_negative_s", double),
                     ("ended_negative", boolean), ("model_id", string)],
        "calls": [("call_id", string), ("path", string), ("duration_s", double), ("sample_rate", int32),
                  ("channels", int32), ("encoding", string), ("scored_channels", pa.list_(int32)),
                  ("windows_scored", int32), ("talk_s", double), ("silence_s", double), ("overlap_s", double),
                  ("interruptions", int32), ("median_reply_gap_s", double), ("emotion_share", shares),
                  ("uncertain_s", double), ("dominant_emotion", string), ("negative_stretches", pa.list_(stretch)),
                  ("escalation_score", double), ("escalation_reasons", pa.list_(reason)), ("analytics_note", string),
                  ("model_id", string), ("status", string)],
        "errors": [("path", string), ("call_id", string), ("error_kind", string), ("error_message", string),
                   ("model_id", string)],
    }.items()}


def scoring_manifest(tables: dict[str, list[dict]], *, file_format: str = "parquet",
                     labels: Sequence[str] = SCORING_LABELS) -> dict:
    """The ``_manifest.json`` of a scoring output holding ``tables``."""
    calls = tables["calls"]
    return {
        "job": "score_calls",
        "inputs": ["/archive/calls/2026/11/"],
        "config": {"output": {"format": file_format, "rows_per_batch": 4096}},
        "model": {"model_id": SCORING_MODEL_ID, "model_kind": "cnn", "labels": list(labels), "path": "/models/cnn"},
        "counts": {
            "calls_listed": len(calls) + len(tables["errors"]), "calls_scored": len(calls),
            "calls_without_speech": sum(call["status"] == "no_speech" for call in calls),
            "errors": len(tables["errors"]), "segments": len(tables["segments"]), "turns": len(tables["turns"]),
            "audio_s": sum(call["duration_s"] for call in calls), "windows_scored": 4 * len(calls),
        },
        "timings_s": {"total": 12.5},
        "finished_at": "2026-11-30T08:15:00+00:00",
    }


def write_scoring_output(folder: Path, tables: dict[str, list[dict]], *, file_format: str = "parquet",
                         labels: Sequence[str] = SCORING_LABELS, manifest: dict | None = None) -> Path:
    """Write ``tables`` as jobs/score_calls.py lays out its output: one folder per table of
    Spark-style part files (segments in two parts) with ``_SUCCESS``, then ``_manifest.json``
    (``manifest``, default :func:`scoring_manifest`) and ``_SUCCESS``. CSV cells of array, map
    and struct columns hold JSON text, booleans ``true``/``false``, nulls nothing."""
    schemas = _scoring_schemas(labels)
    for name, rows in tables.items():
        table_dir = folder / name
        table_dir.mkdir(parents=True)
        (table_dir / "_SUCCESS").write_bytes(b"")
        parts = [rows[: len(rows) // 2], rows[len(rows) // 2:]] if name == "segments" and len(rows) > 1 else [rows]
        for number, part in enumerate(parts):
            if file_format == "csv":
                _write_csv_part(table_dir / f"part-{number:05d}-0000.csv", part, schemas[name])
            else:
                pq.write_table(pa.Table.from_pylist(part, schema=schemas[name]),
                               table_dir / f"part-{number:05d}-0000.snappy.parquet")
    if manifest is None:
        manifest = scoring_manifest(tables, file_format=file_format, labels=labels)
    (folder / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def _write_csv_part(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    def cell(value: object, kind: pa.DataType) -> object:
        if value is None:
            return ""
        if pa.types.is_map(kind):
            return json.dumps(dict(value))
        if pa.types.is_list(kind) or pa.types.is_struct(kind):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(schema.names)
        for row in rows:
            writer.writerow([cell(row[f.name], f.type) for f in schema])
