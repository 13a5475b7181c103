"""The rows and columns of the scoring tables: ``segments``, ``turns``, ``channels``, ``calls``, ``errors``.

One call becomes rows of each table (:func:`call_rows`); ``docs/CONTRACTS.md`` says what a row
and a column are. The names are the same in every table: ``channel`` is the source channel
index (:data:`~ser_udfs.calls.analytics.MIX_CHANNEL` for ``--channels mix``) with its ``role``
beside it, seconds end in ``_s`` (and milliseconds, for spans, in ``_ms``), a label's probability
is :func:`probability_column` (as in ``predictions.parquet`` of the evaluation).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Sequence

from ser_udfs.audio.decode import AudioSource
from ser_udfs.calls.analytics import analyse_call, channel_number
from ser_udfs.calls.config import CallScoringConfig
from ser_udfs.calls.stream import ChannelChoice, Predictor, score_call
from ser_udfs.calls.timeline import call_timeline
from ser_udfs.errors import UserError
from ser_udfs.features.extract_file import clip_id_for

STRETCH_DDL = "struct<channel:int,role:string,start_s:double,end_s:double,label:string,confidence:double>"
REASON_DDL = "struct<reason:string,value:double,threshold:double,detail:string>"
CALL_COLUMNS_DDL = (
    "call_id string, path string, duration_s double, sample_rate int, channels int, encoding string, "
    "scored_channels array<int>, windows_scored int, talk_s double, silence_s double, overlap_s double, "
    "interruptions int, median_reply_gap_s double, emotion_share map<string,double>, uncertain_s double, "
    f"dominant_emotion string, negative_stretches array<{STRETCH_DDL}>, escalation_score double, "
    f"escalation_reasons array<{REASON_DDL}>, analytics_note string, model_id string, status string"
)
CHANNEL_COLUMNS_DDL = (
    "call_id string, path string, channel int, role string, talk_s double, talk_share double, turn_count int, "
    "mean_turn_s double, longest_turn_s double, interruptions int, windows int, adaptation string, "
    "emotion_share map<string,double>, uncertain_s double, dominant_emotion string, negative_share double, "
    "negative_share_first_third double, negative_share_last_third double, longest_negative_s double, "
    "ended_negative boolean, model_id string"
)
ERROR_COLUMNS_DDL = "path string, call_id string, error_kind string, error_message string, model_id string"
#: The tables, in the order the job writes them.
TABLES = ("segments", "turns", "channels", "calls", "errors")


def probability_column(label: str) -> str:
    """Column name of a label's probability: ``prob_`` + the label in lower case, ``[a-z0-9_]``."""
    return "prob_" + re.sub(r"[^0-9a-z_]", "_", label.lower())


def probability_columns(labels: Sequence[str]) -> list[str]:
    """:func:`probability_column` of each label; refuses labels whose columns clash."""
    columns = [probability_column(label) for label in labels]
    if len(set(columns)) != len(columns):
        raise UserError(f"the model's labels {list(labels)} give clashing column names {columns}")
    return columns


def segment_columns_ddl(labels: Sequence[str]) -> str:
    """Columns of the ``segments`` table for a model with ``labels``."""
    probabilities = ", ".join(f"{column} double" for column in probability_columns(labels))
    return (
        "call_id string, path string, channel int, role string, start_s double, end_s double, start_ms bigint, "
        f"end_ms bigint, speech boolean, turn int, label string, confidence double, {probabilities}, model_id string"
    )


def turn_columns_ddl(labels: Sequence[str]) -> str:
    """Columns of the ``turns`` table for a model with ``labels``."""
    probabilities = ", ".join(f"{column} double" for column in probability_columns(labels))
    return (
        "call_id string, path string, channel int, role string, turn int, start_s double, end_s double, "
        "start_ms bigint, end_ms bigint, duration_s double, windows int, label string, confidence double, "
        f"{probabilities}, overlap_s double, overlaps boolean, interruption boolean, model_id string"
    )


def table_ddls(labels: Sequence[str]) -> dict[str, str]:
    """DDL of each output table, in :data:`TABLES` order."""
    return {"segments": segment_columns_ddl(labels), "turns": turn_columns_ddl(labels),
            "channels": CHANNEL_COLUMNS_DDL, "calls": CALL_COLUMNS_DDL, "errors": ERROR_COLUMNS_DDL}


def split_columns(ddl: str) -> list[str]:
    """``"a int, b map<string,double>"`` → ``["a int", "b map<string,double>"]``."""
    columns, depth, start = [], 0, 0
    for index, char in enumerate(ddl + ","):
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            columns.append(ddl[start:index].strip())
            start = index + 1
    return columns


def table_columns(labels: Sequence[str]) -> dict[str, list[str]]:
    """Column names of each output table, in order."""
    return {name: [column.split(" ")[0] for column in split_columns(ddl)] for name, ddl in table_ddls(labels).items()}


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _probabilities(labels: Sequence[str], values: Any) -> dict[str, float | None]:
    return {probability_column(label): None if values is None else float(values[index])
            for index, label in enumerate(labels)}


def call_rows(
    path: str,
    source: AudioSource,
    predictor: Predictor,
    config: CallScoringConfig,
    channels: ChannelChoice,
    model_id: str,
    customer_channel: int = 1,
) -> list[dict[str, Any]]:
    """Score one call into its rows: segments, turns, channels, then the call row, each with
    ``table_kind`` (its table's name); ``customer_channel`` names the roles."""
    call_id = clip_id_for(path)
    scores = score_call(source, predictor, config, channels=channels)
    segments, summary = call_timeline(scores, config)
    analytics = analyse_call(scores, segments, config, customer_channel=customer_channel)
    roles = {figures.channel: figures.role for figures in analytics.channels}
    base = {"call_id": call_id, "path": path, "model_id": model_id}

    def channel_of(name: str) -> dict[str, Any]:
        return {"channel": channel_number(name), "role": roles[name]}

    rows = []
    for segment in segments:
        rows.append({
            **base, **channel_of(segment.channel), "start_s": segment.start_s, "end_s": segment.end_s,
            "start_ms": _ms(segment.start_s), "end_ms": _ms(segment.end_s), "speech": segment.speech,
            "turn": segment.turn, "label": segment.label, "confidence": segment.confidence,
            **_probabilities(scores.labels, segment.probabilities), "table_kind": "segments",
        })
    for turn in analytics.turns:
        rows.append({
            **base, **channel_of(turn.channel), "turn": turn.turn, "start_s": turn.start_s, "end_s": turn.end_s,
            "start_ms": _ms(turn.start_s), "end_ms": _ms(turn.end_s), "duration_s": turn.end_s - turn.start_s,
            "windows": turn.windows, "label": turn.label, "confidence": turn.confidence,
            **_probabilities(scores.labels, turn.probabilities), "overlap_s": turn.overlap_s,
            "overlaps": None if turn.overlap_s is None else turn.overlap_s > 0, "interruption": turn.interruption,
            "table_kind": "turns",
        })
    for channel, figures in zip(scores.channels, analytics.channels):
        row = {**base, **asdict(figures), **channel_of(channel.name), "windows": len(channel.windows),
               "adaptation": channel.adaptation, "table_kind": "channels"}
        del row["ending_negative_share"]
        rows.append(row)
    talk = analytics.talk
    rows.append({
        **base,
        "duration_s": summary.duration_s,
        "sample_rate": scores.info.sample_rate,
        "channels": scores.info.channels,
        "encoding": scores.info.subtype,
        "scored_channels": [channel_number(channel.name) for channel in scores.channels],
        "windows_scored": scores.windows_scored,
        "talk_s": talk.talk_s,
        "silence_s": talk.silence_s,
        "overlap_s": talk.overlap_s,
        "interruptions": talk.interruptions,
        "median_reply_gap_s": talk.median_reply_gap_s,
        "emotion_share": summary.emotion_share,
        "uncertain_s": summary.uncertain_s,
        "dominant_emotion": summary.dominant_emotion,
        "negative_stretches": [{**asdict(stretch), **channel_of(stretch.channel)}
                               for stretch in summary.negative_stretches],
        "escalation_score": analytics.escalation.score,
        "escalation_reasons": [asdict(reason) for reason in analytics.escalation.reasons],
        "analytics_note": analytics.note,
        "status": summary.status,
        "table_kind": "calls",
    })
    return rows
