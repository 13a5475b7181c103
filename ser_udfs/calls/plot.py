"""A call's emotion timeline as a PNG: one panel per channel, class probabilities over time.

Each panel stacks the per-class probabilities of the speech segments (silence left blank,
speech too short to score shaded grey) under a strip coloured by the predicted label.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ser_udfs.calls.stream import UNCERTAIN_LABEL

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


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label: :data:`EMOTION_COLOURS` where known, else the tab10 cycle."""
    from matplotlib import colormaps

    spare = iter(colormaps["tab10"].colors)
    colours = {}
    for label in labels:
        colours[label] = EMOTION_COLOURS.get(label) or "#%02x%02x%02x" % tuple(int(255 * c) for c in next(spare))
    return colours


def plot_call_timeline(
    segments: pd.DataFrame, labels: Sequence[str], *, title: str, probability_columns: Sequence[str]
) -> bytes:
    """Render one call's segments.

    Parameters
    ----------
    segments
        Rows of the ``segments`` table for one call (``channel``, ``start_s``, ``end_s``,
        ``speech``, ``label`` and the probability columns), any order.
    labels
        The model's labels, in the order of ``probability_columns``.
    title
        Figure title (call id and path).

    Returns
    -------
    bytes
        The PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    colours = label_colours(labels)
    channels = sorted(segments["channel"].unique(), key=lambda name: (name == "mix", name))
    duration_s = float(segments["end_s"].max()) if len(segments) else 0.0
    minutes = duration_s > 600
    scale = 60.0 if minutes else 1.0
    figure, axes = plt.subplots(
        len(channels) or 1, 1, figsize=(12, 1.0 + 2.0 * max(1, len(channels))), sharex=True, squeeze=False
    )
    for axis, channel in zip(axes[:, 0], channels):
        rows = segments[segments["channel"] == channel].sort_values("start_s")
        _draw_channel(axis, rows, labels, colours, probability_columns, scale=scale)
        axis.set_ylabel(f"channel {channel}\nprobability")
        axis.set_xlim(0, duration_s / scale)
    axes[-1, 0].set_xlabel("time (min)" if minutes else "time (s)")
    handles = [Patch(color=colours[label], label=label) for label in labels]
    if (segments["label"] == UNCERTAIN_LABEL).any():
        handles.append(Patch(color=UNCERTAIN_COLOUR, label=f"{UNCERTAIN_LABEL} (under summary.min_confidence)"))
    handles.append(Patch(color="#dddddd", label="speech, not scored"))
    figure.legend(handles=handles, loc="upper right", ncol=min(len(handles), 7), fontsize="small")
    figure.suptitle(title, x=0.01, ha="left", fontsize="medium")
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


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
            axis.axvspan(start, end, ymin=0, ymax=1.0 / 1.12, color="#dddddd", linewidth=0)
    axis.set_ylim(0, 1.12)
    axis.set_yticks([0, 0.5, 1.0])
