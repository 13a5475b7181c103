"""The settings of call scoring (``conf/score.toml``), one frozen dataclass per section.

:class:`CallScoringConfig` holds every setting that decides the numbers of a call's tables
besides the model: how turns are cut into windows, speech detection, speaker adaptation,
smoothing, the timeline summary, streaming, and the analytics and escalation figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ser_udfs.audio.vad import VadConfig

@dataclass(frozen=True)
class WindowConfig:
    """``[window]``: how turns are cut into windows (:func:`turn_windows`). ``window_s = 0`` means
    the model's clip length; turns shorter than ``min_speech_s`` are not scored."""

    window_s: float = 0.0
    hop_s: float = 1.5
    min_speech_s: float = 0.5


@dataclass(frozen=True)
class SmoothingConfig:
    """``[smoothing]``: centred moving average over this many neighbouring windows (1 = off)."""

    windows: int = 3

    def __post_init__(self) -> None:
        if self.windows < 1 or self.windows % 2 == 0:
            raise ValueError("smoothing.windows must be an odd number >= 1 (1 turns smoothing off)")


@dataclass(frozen=True)
class SummaryConfig:
    """``[summary]``: which labels count as negative, how stretches of them are reported, and
    the top probability under which a piece of the timeline is labelled ``uncertain`` (0: off)."""

    negative_labels: tuple[str, ...] = ("angry", "disgust", "fear", "sad")
    top_stretches: int = 3
    stretch_gap_s: float = 2.0
    min_stretch_s: float = 2.0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("summary.min_confidence must lie in [0, 1] (0 turns it off)")


@dataclass(frozen=True)
class AdaptationConfig:
    """``[adaptation]``: per-channel speaker adaptation of a model that standardises per speaker.

    ``mode = "speaker"`` adapts every channel with at least ``min_windows`` windows; ``"off"``
    scores every channel with the model's part that needs no speaker statistics.
    """

    mode: Literal["speaker", "off"] = "speaker"
    min_windows: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("speaker", "off") or self.min_windows < 2:
            raise ValueError('adaptation.mode must be "speaker" or "off" and adaptation.min_windows at least 2')


@dataclass(frozen=True)
class StreamConfig:
    """``[stream]``: decode block length and how many windows go through the model at once."""

    block_s: float = 30.0
    batch_windows: int = 32

    def __post_init__(self) -> None:
        if self.block_s <= 0 or self.batch_windows < 1:
            raise ValueError("stream.block_s must be positive and stream.batch_windows at least 1")


@dataclass(frozen=True)
class AnalyticsConfig:
    """``[analytics]``: interruptions and how a channel's speech "ends negative".

    A turn is an interruption when it starts while another scored channel has been speaking for
    at least ``interruption_after_s`` and that channel stops within ``interruption_stop_s`` of
    the start. A channel ended negative when, of the last ``ended_negative_s`` seconds of its
    labelled speech, more than ``ended_negative_share`` is labelled with a negative emotion
    (``summary.negative_labels``).
    """

    interruption_after_s: float = 1.0
    interruption_stop_s: float = 2.0
    ended_negative_s: float = 10.0
    ended_negative_share: float = 0.5

    def __post_init__(self) -> None:
        if min(self.interruption_after_s, self.interruption_stop_s) < 0 or self.ended_negative_s <= 0:
            raise ValueError("analytics.interruption_after_s and interruption_stop_s must not be negative, "
                             "and analytics.ended_negative_s must be positive")
        if not 0 <= self.ended_negative_share < 1:
            raise ValueError("analytics.ended_negative_share must lie in [0, 1)")


@dataclass(frozen=True)
class EscalationConfig:
    """``[escalation]``: the score that sorts calls to review, from five reasons.

    Each reason has a figure, a threshold and a weight: ``sustained_negative`` (the longest
    negative stretch of a channel whose role is in ``roles``, seconds), ``rising_negative``
    (that channel's negative share in the last third of the call minus the first third),
    ``ended_negative`` (the negative share of the end of its speech, threshold
    ``analytics.ended_negative_share``), ``overlap`` (overlap seconds over talk seconds) and
    ``interruptions`` (per minute of call). A reason fires when its figure exceeds its threshold;
    the score is ``sum(weight * min(1, figure / threshold)) / sum(weights)``, in ``[0, 1]``.
    """

    roles: tuple[str, ...] = ("customer", "unknown")
    sustained_negative_s: float = 10.0
    rising_negative: float = 0.3
    overlap_share: float = 0.1
    interruptions_per_min: float = 1.0
    sustained_negative_weight: float = 0.3
    rising_negative_weight: float = 0.2
    ended_negative_weight: float = 0.25
    overlap_weight: float = 0.1
    interruptions_weight: float = 0.15

    def __post_init__(self) -> None:
        thresholds = (self.sustained_negative_s, self.rising_negative, self.overlap_share, self.interruptions_per_min)
        weights = (self.sustained_negative_weight, self.rising_negative_weight, self.ended_negative_weight,
                   self.overlap_weight, self.interruptions_weight)
        if min(thresholds) <= 0 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("escalation thresholds must be positive, weights not negative, and some weight positive")
        unknown = set(self.roles) - {"customer", "agent", "unknown"}
        if unknown:
            raise ValueError(f"escalation.roles {sorted(unknown)}: roles are customer, agent and unknown")


@dataclass(frozen=True)
class CallScoringConfig:
    """Everything that decides the numbers of a call's tables, besides the model."""

    window: WindowConfig = field(default_factory=WindowConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
