"""A call's emotion timeline as a PNG: one panel per channel, class probabilities over time.

Each panel, named by the channel's role, stacks the per-class probabilities of the speech
segments (silence left blank, speech too short to score shaded grey) under a strip coloured by
the predicted label (its y tick says "label"). The legend, in its own row under the panels, explains every colour.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ser_udfs.calls.analytics import MIX_CHANNEL
from ser_udfs.calls.timeline import UNCERTAIN_LABEL

#: Colours of the usual emotions; other labels take tab10 colours in order.
EMOTION_COLOURS = {
    "angry": "#d62728",
    "disgust": "#8c8c00",
    "fear": "#9467bd",
    "happy": "#ff9f1c",
    "neutral": "#9e9e9e",
    "calm": "#7fc97f",
    "sad": "#1f77b4",
    "surprise": "#e377c2",
    "boredom": "#8c564b",
}
#: Colour of the ``uncertain`` label band (speech whose top probability is under ``summary.min_confidence``).
UNCERTAIN_COLOUR = "#444444"
#: Colour of speech that no window scored.
UNSCORED_COLOUR = "#dddddd"
#: Longest readable part of a timeline's file name.
FILE_STEM_CHARS = 60
#: Characters of the title per line before it wraps.
TITLE_WIDTH_CHARS = 120


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label: :data:`EMOTION_COLOURS` where known, else the tab10 cycle."""
    from matplotlib import colormaps

    spare = iter(colormaps["tab10"].colors)
    colours = {}
    for label in labels:
        colours[label] = EMOTION_COLOURS.get(label) or "#%02x%02x%02x" % tuple(int(255 * c) for c in next(spare))
    return colours


def channel_name(channel: int, role: str | None) -> str:
    """How a timeline names a channel: ``"customer (channel 1)"``, ``"mix of all channels"`` for -1."""
    if channel == MIX_CHANNEL:
        return "mix of all channels"
    return f"{role or 'unknown'} (channel {channel})"


def timeline_file_name(call_id: str, path: str) -> str:
    """File name of a call's timeline: ``"<call_id>-<readable stem>.png"``.

    The stem is the file stem of ``path`` (a local path or a URI) reduced to ``[A-Za-z0-9._-]``
    (other runs of characters become one ``_``) and cut to :data:`FILE_STEM_CHARS` characters;
    the call id is reduced the same way, so the name is safe in any folder and URL.
    """
    safe_id = _safe_name(call_id) or "call"
    stem = _safe_name(PurePosixPath(path.rstrip("/")).stem)[:FILE_STEM_CHARS].strip("._-")
    return f"{safe_id}-{stem}.png" if stem else f"{safe_id}.png"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def plot_call_timeline(
    segments: pd.DataFrame, labels: Sequence[str], *, title: str, probability_columns: Sequence[str]
) -> bytes:
    """Render one call's segments.

    Parameters
    ----------
    segments
        Rows of the ``segments`` table for one call (``channel`` int, ``role``, ``start_s``,
        ``end_s``, ``speech``, ``label`` and the probability columns), any order.
    labels
        The model's labels, in the order of ``probability_columns``.
    title
        Figure title (call id and path); long titles wrap.
    probability_columns
        The columns holding each label's probability.

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib import pyplot as plt

    figure = timeline_figure(segments, labels, title=title, probability_columns=probability_columns)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def timeline_figure(
    segments: pd.DataFrame, labels: Sequence[str], *, title: str, probability_columns: Sequence[str]
) -> Any:
    """The matplotlib figure of :func:`plot_call_timeline` (close it with ``pyplot.close``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    colours = label_colours(labels)
    channels = sorted({int(channel) for channel in segments["channel"]}, key=lambda channel: (channel == MIX_CHANNEL, channel))
    duration_s = float(segments["end_s"].max()) if len(segments) else 0.0
    minutes = duration_s > 600
    scale = 60.0 if minutes else 1.0
    title_lines = textwrap.wrap(title, TITLE_WIDTH_CHARS) or [""]
    handles = _legend_handles(labels, colours, uncertain=bool((segments["label"] == UNCERTAIN_LABEL).any()))
    legend_columns = min(len(handles), 6)
    figure, axes = plt.subplots(
        len(channels) or 1, 1, squeeze=False, sharex=True, layout="constrained",
        figsize=(12, 0.6 + 0.25 * len(title_lines) + 2.0 * max(1, len(channels)) + 0.3 * -(-len(handles) // legend_columns)),
    )
    for axis, channel in zip(axes[:, 0], channels):
        rows = segments[segments["channel"].astype(int) == channel].sort_values("start_s")
        _draw_channel(axis, rows, labels, colours, probability_columns, scale=scale)
        axis.set_ylabel(f"{channel_name(channel, rows['role'].iloc[0])}\nprobability", fontsize="small")
        axis.set_xlim(0, duration_s / scale)
    axes[-1, 0].set_xlabel("time (min)" if minutes else "time (s)")
    figure.suptitle("\n".join(title_lines), x=0.01, ha="left", fontsize="medium", parse_math=False)  # "$" in paths
    figure.legend(handles=handles, loc="outside lower center", ncol=legend_columns, fontsize="small", frameon=False)
    return figure


def _legend_handles(labels: Sequence[str], colours: dict[str, str], *, uncertain: bool) -> list[Any]:
    """One patch per colour of the figure: each label, ``uncertain`` when present, unscored speech, no speech."""
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[label], label=label) for label in labels]
    if uncertain:
        handles.append(Patch(color=UNCERTAIN_COLOUR, label=f"{UNCERTAIN_LABEL} (under summary.min_confidence)"))
    handles.append(Patch(color=UNSCORED_COLOUR, label="speech, not scored"))
    handles.append(Patch(facecolor="white", edgecolor="#888888", label="no speech"))
    return handles


def _draw_channel(
    axis: Any, rows: pd.DataFrame, labels: Sequence[str], colours: dict[str, str], probability_columns: Sequence[str],
    *, scale: float,
) -> None:
    """One channel's rows (sorted by ``start_s``) on ``axis``: stacked probabilities, a label band
    over scored speech, grey under speech that no window scored; time divided by ``scale``."""
    edges = np.concatenate([rows["start_s"].to_numpy(), rows["end_s"].to_numpy()[-1:]]) / scale
    probabilities = np.nan_to_num(rows[list(probability_columns)].to_numpy(dtype=float), nan=0.0)
    bottom = np.zeros(len(rows))
    for index, label in enumerate(labels):
        top = bottom + probabilities[:, index]
        axis.stairs(top, edges, baseline=bottom, fill=True, color=colours[label], linewidth=0)
        bottom = top
    for row in rows.itertuples():
        start, end = row.start_s / scale, row.end_s / scale
        if row.speech and isinstance(row.label, str):
            axis.axvspan(start, end, ymin=1.02 / 1.12, ymax=1.10 / 1.12, color=colours.get(row.label, UNCERTAIN_COLOUR),
                         linewidth=0)
        elif row.speech:
            axis.axvspan(start, end, ymin=0, ymax=1.0 / 1.12, color=UNSCORED_COLOUR, linewidth=0)
    axis.set_ylim(0, 1.12)
    axis.set_yticks([0, 0.5, 1.0, 1.06], ["0", "0.5", "1", "label"])  # the strip: the predicted label
