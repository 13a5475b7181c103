"""The run report of a scoring output: one offline HTML page with its counts, charts and the calls to review.

The functions take the tables of ``jobs/score_calls.py`` (``docs/CONTRACTS.md``) as pandas frames
(the ``calls``, ``channels`` and ``errors`` tables whole, the ``segments`` of the calls to review)
and return HTML text and PNG bytes; ``jobs/report_calls.py`` reads the tables and writes the files.
Every value from the data is escaped; the page needs no network, no script and no font files.

Cells of list columns may be Arrow lists (Parquet) or JSON text (CSV): :func:`as_records` reads both.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from ser_udfs.calls.analytics import MIX_CHANNEL
from ser_udfs.calls.plot import UNCERTAIN_COLOUR, label_colours, plot_call_timeline, timeline_file_name
from ser_udfs.calls.timeline import UNCERTAIN_LABEL

#: The ``<meta name="generator">`` of every report: a folder whose index.html has it is a previous report.
GENERATOR = "ser-spark report_calls"
#: Folder of the images inside a report.
IMAGES_DIR = "images"
#: The columns the report reads from each table and their Arrow types (``pyarrow.type_for_alias``
#: names; list columns are ``string``: JSON text in CSV). The segments' probability columns come on top.
REPORT_COLUMNS: dict[str, dict[str, str]] = {
    "calls": {
        "call_id": "string", "path": "string", "duration_s": "double", "overlap_s": "double",
        "escalation_score": "double", "escalation_reasons": "string", "analytics_note": "string", "status": "string",
    },
    "channels": {
        "call_id": "string", "channel": "int32", "role": "string", "talk_share": "double",
        "dominant_emotion": "string", "negative_share": "double", "ended_negative": "bool",
    },
    "errors": {"error_kind": "string"},
    "segments": {
        "call_id": "string", "channel": "int32", "role": "string", "start_s": "double", "end_s": "double",
        "speech": "bool", "label": "string",
    },
}
#: Colours of the roles in the charts.
ROLE_COLOURS = {"customer": "#1f77b4", "agent": "#ff7f0e", "unknown": "#7f7f7f"}
ROLE_ORDER = ("customer", "agent", "unknown")
#: Colour of the single-series histograms (overlap, escalation score).
BAR_COLOUR = "#4c72b0"
#: Histogram edges 0, 0.1, ... 1 (exact tenths, so that a score of 0.3 falls in 0.3-0.4).
TENTHS = np.arange(11) / 10
NO_LABEL = "no labelled speech"
DASH = "\u2014"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; max-width: 60rem; }
section.call { border-top: 1px solid #ddd; margin-top: 1.5rem; padding-top: .5rem; }
code { background: #f6f6f6; padding: 0 .2rem; word-break: break-all; } .note { color: #555; font-style: italic; }
"""


@dataclass(frozen=True)
class RunReport:
    """A finished report: ``index.html`` and its images (file name inside :data:`IMAGES_DIR` → PNG bytes)."""

    html: str
    images: dict[str, bytes]


def as_records(cell: Any) -> list[dict[str, Any]]:
    """A list-of-structs cell as dicts: an Arrow list (Parquet), JSON text (CSV) or null (empty list)."""
    if isinstance(cell, str):
        cell = json.loads(cell) if cell.strip() else []
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [dict(item) for item in cell]
    return []


def review_order(calls: pd.DataFrame, top: int) -> pd.DataFrame:
    """The ``top`` calls to review: calls with speech by ``escalation_score``, highest first (ties by ``call_id``)."""
    candidates = calls[calls["status"] != "no_speech"]
    ordered = candidates.sort_values(
        ["escalation_score", "call_id"], ascending=[False, True], na_position="last", kind="stable"
    )
    return ordered.head(top).reset_index(drop=True)


def build_report(
    *,
    manifest: dict[str, Any],
    source: str,
    finished_at: str,
    calls: pd.DataFrame,
    channels: pd.DataFrame,
    errors: pd.DataFrame,
    segments: pd.DataFrame,
    top: int,
    probability_columns: Sequence[str],
) -> RunReport:
    """The whole report of one scoring output.

    Parameters
    ----------
    manifest
        The output's ``_manifest.json``.
    source
        Where the scoring output is, as the page shows it.
    finished_at
        When the scoring run finished (the manifest's ``finished_at``, else the manifest file's time).
    calls, channels, errors
        The whole tables (at least the :data:`REPORT_COLUMNS`).
    segments
        The segments of (at least) the calls :func:`review_order` picks, with ``probability_columns``.
    top
        How many calls to review.
    probability_columns
        The segments' probability columns, in the order of the model's labels.
    """
    labels = list(manifest.get("model", {}).get("labels", []))
    review = review_order(calls, top)
    distribution_html, images = _distributions(calls, channels, labels)
    review_html, timelines = _review(review, len(calls), channels, segments, labels, probability_columns)
    model_id = manifest.get("model", {}).get("model_id", "unknown model")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scoring run report: {_e(model_id)}, {_e(finished_at)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Scoring run report</h1>
{_run_section(manifest, source, finished_at, errors)}
{distribution_html}
{review_html}
</body>
</html>
"""
    return RunReport(html=page, images={**images, **timelines})


# --- the run -------------------------------------------------------------------------------------


def _run_section(manifest: dict[str, Any], source: str, finished_at: str, errors: pd.DataFrame) -> str:
    counts = manifest.get("counts", {})
    model = manifest.get("model", {})
    audio_s = counts.get("audio_s")
    hours = DASH if audio_s is None else f"{audio_s / 3600:.2f} h ({audio_s:,.0f} s)"
    total_s = manifest.get("timings_s", {}).get("total")
    rows = [
        ("Calls listed", counts.get("calls_listed")),
        ("Calls scored", counts.get("calls_scored")),
        ("Calls without speech", counts.get("calls_without_speech")),
        ("Calls that could not be scored", counts.get("errors", len(errors))),
        ("Hours of audio", hours),
        ("Windows scored", counts.get("windows_scored")),
        ("Model", f"{model.get('model_id', DASH)} ({model.get('model_kind', 'kind not recorded')})"),
        ("Labels", ", ".join(model.get("labels", [])) or DASH),
        ("Inputs", ", ".join(str(item) for item in manifest.get("inputs", [])) or DASH),
        ("Scoring output", source),
        ("Finished at", finished_at),
        ("Scoring took", DASH if total_s is None else f"{total_s:,.1f} s"),
    ]
    table = "\n".join(f"<tr><th>{_e(name)}</th><td>{_e(_text(value))}</td></tr>" for name, value in rows)
    return f"""<section id="run">
<h2>The run</h2>
<table class="counts">
{table}
</table>
<h3>Errors by kind</h3>
{_errors_table(errors)}
</section>"""


def _errors_table(errors: pd.DataFrame) -> str:
    if errors.empty:
        return "<p>No call failed: every listed call was scored.</p>"
    by_kind = errors["error_kind"].fillna("unknown").value_counts().sort_index()
    rows = "\n".join(
        f'<tr><td><code>{_e(kind)}</code></td><td class="number">{count}</td></tr>' for kind, count in by_kind.items()
    )
    return f"<table><tr><th>Error kind</th><th>Calls</th></tr>\n{rows}\n</table>"


# --- distributions -------------------------------------------------------------------------------


def _distributions(calls: pd.DataFrame, channels: pd.DataFrame, labels: Sequence[str]) -> tuple[str, dict[str, bytes]]:
    """The distributions section and its charts."""
    if calls.empty:
        return '<section id="distributions"><h2>Distributions</h2>\n<p>No call was scored in this run, so there is ' \
               "nothing to chart.</p></section>", {}
    parts: list[str] = []
    images: dict[str, bytes] = {}
    if channels.empty:
        parts.append("<p>No channel was scored, so there are no per-role figures.</p>")
    else:
        images["dominant-emotion-by-role.png"] = dominant_emotion_chart(channels, labels)
        parts.append(_figure(
            "dominant-emotion-by-role.png", "Grouped bar chart: number of channels per dominant emotion, by role",
            "Dominant emotion of each scored channel, grouped by role: one bar per emotion, coloured as the legend "
            f"says (white with an outline: {NO_LABEL}). Bar height is the number of channels.",
        ))
        images["talk-share-by-role.png"] = talk_share_chart(channels)
        parts.append(_figure(
            "talk-share-by-role.png", "Histogram of talk share per channel, by role",
            "Talk share of each scored channel (its speaking time over the call's speaking time), one bar colour per "
            "role as the legend says; bar height is the number of channels.",
        ))
    overlaps = calls.dropna(subset=["overlap_s"])
    if overlaps.empty:
        parts.append("<p>No call has two scored channels, so there is no overlap to show.</p>")
    else:
        images["overlap-share.png"] = overlap_chart(overlaps)
        parts.append(_figure(
            "overlap-share.png", "Histogram of overlapping speech as a share of call duration",
            f"Seconds when both channels speak at once, as a share of the call's duration, over the {len(overlaps)} "
            "call(s) with two scored channels (calls with one channel have no overlap); one colour: number of calls.",
        ))
    images["escalation-score.png"] = escalation_chart(calls)
    parts.append(_figure(
        "escalation-score.png", "Histogram of the escalation score of the scored calls",
        "Escalation score of every scored call, from 0 (nothing fired) to 1; one colour: number of calls per tenth.",
    ))
    return '<section id="distributions"><h2>Distributions</h2>\n' + "\n".join(parts) + "\n</section>", images


def dominant_emotion_chart(channels: pd.DataFrame, labels: Sequence[str]) -> bytes:
    """PNG: channels per dominant emotion (bars, coloured per emotion) grouped by role (x)."""
    dominant = channels["dominant_emotion"].where(channels["dominant_emotion"].notna(), NO_LABEL)
    present = set(dominant)
    emotions = [label for label in labels if label in present]
    emotions += sorted(present - set(emotions) - {NO_LABEL}) + ([NO_LABEL] if NO_LABEL in present else [])
    colours = {**label_colours(labels), UNCERTAIN_LABEL: UNCERTAIN_COLOUR}
    roles = _roles(channels["role"])
    counts = pd.crosstab(channels["role"].fillna("unknown"), dominant).reindex(index=roles, columns=emotions, fill_value=0)
    figure, axis = _figure_axes()
    width = 0.8 / len(emotions)
    spare = iter(["#17becf", "#bcbd22", "#8c564b", "#e377c2"] * 8)
    for index, emotion in enumerate(emotions):
        positions = np.arange(len(roles)) + (index - (len(emotions) - 1) / 2) * width
        if emotion == NO_LABEL:
            style = {"color": "white", "edgecolor": "#555555"}
        else:
            style = {"color": colours.get(emotion) or next(spare)}
        axis.bar(positions, counts[emotion].to_numpy(), width, label=emotion, **style)
    axis.set_xticks(np.arange(len(roles)), roles)
    _label(axis, "role", "channels", "Dominant emotion per role")
    axis.legend(title="dominant emotion", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _png(figure)


def talk_share_chart(channels: pd.DataFrame) -> bytes:
    """PNG: histogram of ``talk_share`` in tenths, one bar colour per role."""
    roles = _roles(channels["role"])
    role = channels["role"].fillna("unknown")
    shares = [channels.loc[role == name, "talk_share"].dropna().clip(0, 1).to_numpy() for name in roles]
    figure, axis = _figure_axes()
    axis.hist(shares, bins=TENTHS, label=roles, color=[_role_colour(name) for name in roles])
    _label(axis, "talk share (share of the call's speaking time)", "channels", "Talk share per role")
    axis.legend(title="role", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _png(figure)


def overlap_chart(calls: pd.DataFrame) -> bytes:
    """PNG: histogram of ``overlap_s / duration_s`` over the calls with an overlap figure."""
    timed = calls[calls["duration_s"] > 0]
    share = (timed["overlap_s"] / timed["duration_s"]).clip(0, 1).to_numpy()
    upper = max(0.05, math.ceil(float(share.max(initial=0.0)) * 20) / 20)
    figure, axis = _figure_axes()
    axis.hist(share, bins=np.linspace(0, upper, 11), color=BAR_COLOUR, edgecolor="white")
    _label(axis, "overlapping speech (share of call duration)", "calls", "Overlap: both channels speaking at once")
    return _png(figure)


def escalation_chart(calls: pd.DataFrame) -> bytes:
    """PNG: histogram of ``escalation_score`` in tenths from 0 to 1."""
    scores = calls["escalation_score"].dropna().clip(0, 1).to_numpy()
    figure, axis = _figure_axes()
    axis.hist(scores, bins=TENTHS, color=BAR_COLOUR, edgecolor="white")
    _label(axis, "escalation score", "calls", "Escalation score")
    return _png(figure)


def _label(axis: Any, x_label: str, y_label: str, title: str) -> None:
    """Name a chart's axes (counts on y, in whole numbers) and title it."""
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.set_title(title)
    axis.yaxis.get_major_locator().set_params(integer=True)


def _roles(roles: pd.Series) -> list[str]:
    present = set(roles.fillna("unknown"))
    return [role for role in ROLE_ORDER if role in present] + sorted(present - set(ROLE_ORDER))


def _role_colour(role: str) -> str:
    return ROLE_COLOURS.get(role, "#2ca02c")


def _figure_axes() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=(8, 3.6), layout="constrained")


def _png(figure: Any) -> bytes:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


# --- the calls to review -------------------------------------------------------------------------


def _review(
    review: pd.DataFrame, scored: int, channels: pd.DataFrame, segments: pd.DataFrame, labels: Sequence[str],
    probability_columns: Sequence[str],
) -> tuple[str, dict[str, bytes]]:
    """The calls-to-review section and the timelines of its calls."""
    head = '<section id="review">\n<h2>Calls to review</h2>\n'
    if review.empty:
        reason = "No call was scored" if scored == 0 else "No scored call has speech"
        return head + f"<p>{reason}: there is no call to review.</p>\n</section>", {}
    intro = (
        f"<p>The {len(review)} call(s) with the highest escalation score (ties by call id) of {scored} scored; "
        "calls without speech are not listed.</p>"
    )
    summary_rows = "\n".join(
        f'<tr><td class="number">{rank}</td><td><a href="#call-{rank}"><code>{_e(call.call_id)}</code></a></td>'
        f'<td class="number">{_e(_number(call.escalation_score, "{:.2f}"))}</td>'
        f'<td class="number">{_e(_duration(call.duration_s))}</td><td><code>{_e(call.path)}</code></td></tr>'
        for rank, call in enumerate(review.itertuples(), start=1)
    )
    summary = (
        "<table><tr><th>#</th><th>Call id</th><th>Escalation score</th><th>Duration</th><th>Path</th></tr>\n"
        f"{summary_rows}\n</table>"
    )
    sections, images = [], {}
    for rank, call in enumerate(review.itertuples(), start=1):
        name = timeline_file_name(str(call.call_id), str(call.path))
        rows = segments[segments["call_id"] == call.call_id]
        if not rows.empty:
            images[name] = plot_call_timeline(
                rows, labels, title=f"call {call.call_id}: {call.path}", probability_columns=probability_columns
            )
        own = channels[channels["call_id"] == call.call_id]
        sections.append(_call_section(rank, call, own, name if not rows.empty else None))
    return head + intro + "\n" + summary + "\n" + "\n".join(sections) + "\n</section>", images


def _call_section(rank: int, call: Any, channels: pd.DataFrame, image: str | None) -> str:
    reasons = as_records(call.escalation_reasons)
    if reasons:
        why = "<ul>\n" + "\n".join(f"<li>{_e(reason.get('detail') or reason.get('reason'))}</li>" for reason in reasons) + "\n</ul>"
    else:
        why = "<p>No escalation reason fired.</p>"
    note = "" if _missing(call.analytics_note) else f'<p class="note">{_e(call.analytics_note)}</p>'
    if image is None:
        picture = "<p>This call has no segments, so there is no timeline.</p>"
    else:
        picture = _figure(
            image, f"Emotion timeline of call {call.call_id}, one panel per channel",
            f"Timeline of call {call.call_id}: one panel per channel, named by role; stacked class probabilities "
            "over time under a strip coloured by the predicted label. The legend under the panels explains every "
            "colour: one per label, dark grey uncertain, light grey speech not scored, white no speech.",
        )
    return f"""<section class="call" id="call-{rank}">
<h3>{rank}. Call <code>{_e(call.call_id)}</code>: escalation score {_e(_number(call.escalation_score, "{:.2f}"))}</h3>
<table>
<tr><th>Path</th><td><code>{_e(call.path)}</code></td></tr>
<tr><th>Duration</th><td>{_e(_duration(call.duration_s))}</td></tr>
<tr><th>Escalation score</th><td>{_e(_number(call.escalation_score, "{:.2f}"))}</td></tr>
</table>
<h4>Why it is here</h4>
{why}
{note}
<h4>Per role</h4>
{_roles_table(channels)}
{picture}
</section>"""


def _roles_table(channels: pd.DataFrame) -> str:
    if channels.empty:
        return "<p>No channel of this call was scored.</p>"
    ordered = channels.assign(_order=channels["role"].map(lambda role: (ROLE_ORDER + (role,)).index(role)))
    rows = "\n".join(
        f"<tr><td>{_e(_text(row.role))}</td><td class=\"number\">{_e(_channel(row.channel))}</td>"
        f'<td class="number">{_e(_number(row.talk_share, "{:.0%}"))}</td>'
        f'<td class="number">{_e(_number(row.negative_share, "{:.0%}"))}</td>'
        f"<td>{_e(_yes_no(row.ended_negative))}</td></tr>"
        for row in ordered.sort_values(["_order", "channel"]).itertuples()
    )
    return (
        "<table><tr><th>Role</th><th>Channel</th><th>Talk share</th><th>Negative share</th><th>Ended negative</th></tr>\n"
        f"{rows}\n</table>"
    )


# --- formatting ----------------------------------------------------------------------------------


def _figure(name: str, alt: str, caption: str) -> str:
    source = f"{IMAGES_DIR}/{quote(name)}"
    return f'<figure>\n<img src="{_e(source)}" alt="{_e(alt)}">\n<figcaption>{_e(caption)}</figcaption>\n</figure>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _text(value: Any) -> str:
    return DASH if _missing(value) else str(value)


def _number(value: Any, template: str) -> str:
    return DASH if _missing(value) else template.format(float(value))


def _duration(seconds: Any) -> str:
    if _missing(seconds):
        return DASH
    minutes, rest = divmod(float(seconds), 60)
    return f"{seconds:.1f} s" if minutes < 1 else f"{int(minutes)} min {rest:04.1f} s ({seconds:,.0f} s)"


def _channel(channel: Any) -> str:
    return "mix" if not _missing(channel) and int(channel) == MIX_CHANNEL else _text(channel)


def _yes_no(value: Any) -> str:
    return DASH if _missing(value) else ("yes" if bool(value) else "no")
