"""Speech detection for call scoring: which frames are speech (``vad.method``), then regions.

Three frame classifiers (``vad.method``), all streamed and behind the same region rule (step 4):

- ``energy`` (default): an adaptive noise floor, steps 1–3 below; several thousand times real
  time, exact under streaming;
- ``webrtc``: WebRTC's GMM voice detector (the ``webrtcvad-wheels`` package), aggressiveness
  ``vad.webrtc_mode`` 0–3, on frames of 10, 20 or 30 ms at 8, 16, 32 or 48 kHz;
- ``silero``: the silero-vad network (its TorchScript model ships in the ``silero-vad`` wheel and
  loads offline), speech where its probability is at least ``vad.silero_threshold``, on 32 ms
  chunks at 8 or 16 kHz (``frame_s`` is then the chunk); an LSTM step per chunk, one model per
  channel (it carries the channel's state).

With ``vad.gate`` (default on) the two models only see frames at or above
``vad.min_level_dbfs``: quieter frames are silence without asking them, so silence costs nothing.
``bench/vad_accuracy.py`` measures the three against truth in noise (``docs/RESULTS.md``).

The energy rule, per channel at the scoring sample rate:

1. Frames of ``frame_s`` (non-overlapping). ``level_db`` = 10·log10 of the frame's mean square
   (dBFS for full-scale ±1 audio).
2. Noise floor: the minimum, over the last ``floor_window_s`` (this frame included), of the
   level averaged over the last ``floor_smooth_s`` (energy mean, then dB). The average keeps
   single dropped-out frames from pulling the floor down; the minimum follows the pauses between
   words, so the floor tracks line noise that changes slowly. At the start of a stream only the
   frames seen so far count.
3. A frame is speech-like when ``level_db >= max(floor + margin_db, min_level_dbfs)``.
4. Runs of speech-like frames separated by gaps of at most ``bridge_gap_s`` are joined; joined
   regions shorter than ``min_speech_s`` are dropped (clicks, bursts); the rest are widened by
   ``pad_s`` on each side (soft word edges). ``2 * pad_s <= bridge_gap_s`` keeps widened
   regions apart.

Everything in steps 1–3 is causal and step 4 looks ahead by at most ``bridge_gap_s +
min_speech_s``, so :class:`SpeechDetector` gives the same regions whatever the block sizes it is
fed: :attr:`SpeechDetector.final_sample` says up to where its decisions can no longer change.

Limits (documented, not hidden): stationary noise well above the speech level, music on hold and
loud non-speech sounds lasting longer than ``min_speech_s`` count as speech; a call that starts
with speech and never pauses within ``floor_window_s`` takes the first pause to settle its floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.ndimage import minimum_filter1d

from ser_udfs.errors import UserError

_POWER_FLOOR = 1e-12  # -120 dBFS: the level of digital silence


@dataclass(frozen=True)
class VadConfig:
    """Settings of the speech detector (``[vad]`` in ``conf/score.toml``)."""

    method: Literal["energy", "webrtc", "silero"] = "energy"
    frame_s: float = 0.02
    margin_db: float = 10.0
    min_level_dbfs: float = -55.0
    floor_window_s: float = 5.0
    floor_smooth_s: float = 0.2
    bridge_gap_s: float = 0.3
    min_speech_s: float = 0.25
    pad_s: float = 0.1
    gate: bool = True
    webrtc_mode: int = 2
    silero_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in ("energy", "webrtc", "silero"):
            raise ValueError('vad.method must be "energy", "webrtc" or "silero"')
        if self.webrtc_mode not in (0, 1, 2, 3) or not 0 < self.silero_threshold < 1:
            raise ValueError("vad.webrtc_mode must be 0, 1, 2 or 3 and vad.silero_threshold lie in (0, 1)")
        if self.method == "webrtc" and round(self.frame_s * 1000) not in (10, 20, 30):
            raise ValueError("vad.method webrtc needs vad.frame_s of 0.01, 0.02 or 0.03")
        if not 0 < self.frame_s <= 0.1:
            raise ValueError("vad.frame_s must lie in (0, 0.1] seconds")
        if self.floor_window_s < self.frame_s or self.floor_smooth_s < self.frame_s:
            raise ValueError("vad.floor_window_s and vad.floor_smooth_s must be at least one frame")
        if min(self.bridge_gap_s, self.min_speech_s, self.pad_s, self.margin_db) < 0:
            raise ValueError("vad.bridge_gap_s, min_speech_s, pad_s and margin_db must not be negative")
        if 2 * self.pad_s > self.bridge_gap_s:
            raise ValueError("vad.pad_s must be at most half of vad.bridge_gap_s (widened regions would touch)")


class SpeechDetector:
    """Streaming speech detector for one channel.

    Feed consecutive blocks of samples with :meth:`push`, then call :meth:`finish` once.
    :attr:`regions` holds the final speech regions found so far and :attr:`final_sample` the
    sample before which nothing changes any more.

    Parameters
    ----------
    config
        Detector settings.
    sample_rate
        Hz of the samples pushed.
    """

    def __init__(self, config: VadConfig, sample_rate: int) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self._model = _frame_model(config, sample_rate)
        self.frame_samples = self._model.frame_samples if self._model else max(1, int(round(config.frame_s * sample_rate)))
        frame_s = self.frame_samples / sample_rate
        self._smooth = max(1, int(round(config.floor_smooth_s / frame_s)))
        self._floor_window = max(1, int(round(config.floor_window_s / frame_s))) | 1  # odd
        self._bridge = int(round(config.bridge_gap_s / frame_s))
        self._min_frames = int(round(config.min_speech_s / frame_s))
        self._pad = min(int(round(config.pad_s / frame_s)), self._bridge // 2)
        self._leftover = np.zeros(0, dtype=np.float32)
        self._powers = np.zeros(0, dtype=np.float64)  # last (smooth - 1) frame powers
        self._smoothed_db = np.zeros(0, dtype=np.float64)  # last (floor_window - 1) smoothed levels
        self._frames_done = 0
        self._open_start: int | None = None  # start frame of a speech-like run still going on
        self._pending: list[int] | None = None  # [start, end) frames of a joined region not yet final
        self._frame_regions: list[tuple[int, int]] = []
        self._total_samples: int | None = None
        self.regions: list[tuple[int, int]] = []

    @property
    def final_sample(self) -> int:
        """Speech decisions for samples before this index are final (see :attr:`provisional_region`)."""
        if self._total_samples is not None:
            return self._total_samples
        joint = self._joint()
        if joint is None:
            return max(0, self._frames_done - self._pad) * self.frame_samples
        start, end = joint
        if end - start >= self._min_frames:
            return end * self.frame_samples
        return max(0, start - self._pad) * self.frame_samples

    @property
    def provisional_region(self) -> tuple[int, int] | None:
        """The part of the region still growing that is already certain to be speech, in samples.

        A region that has reached ``min_speech_s`` is never dropped, so its samples up to now
        are speech even though its end is not known yet; without this, a long stretch of speech
        would have to be held in memory until it ends. ``None`` when there is no such part.
        """
        joint = self._joint() if self._total_samples is None else None
        if joint is None or joint[1] - joint[0] < self._min_frames:
            return None
        return max(0, joint[0] - self._pad) * self.frame_samples, joint[1] * self.frame_samples

    def _joint(self) -> tuple[int, int] | None:
        """Frames of the region being built: the pending joined runs and the run going on."""
        if self._pending is not None:
            return self._pending[0], self._frames_done if self._open_start is not None else self._pending[1]
        if self._open_start is not None:
            return self._open_start, self._frames_done
        return None

    def push(self, samples: np.ndarray) -> None:
        """Analyse the next block ``[n]`` of samples."""
        if self._total_samples is not None:
            raise RuntimeError("push() after finish()")
        data = np.concatenate([self._leftover, np.asarray(samples, dtype=np.float32)])
        n_frames = data.size // self.frame_samples
        self._leftover = data[n_frames * self.frame_samples :]
        if n_frames:
            frames = data[: n_frames * self.frame_samples].reshape(n_frames, self.frame_samples)
            self._analyse(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / self.frame_samples, frames)

    def finish(self) -> None:
        """Analyse the last partial frame and close every region."""
        if self._total_samples is not None:
            return
        total = self._frames_done * self.frame_samples + self._leftover.size
        if self._leftover.size:
            tail = self._leftover.astype(np.float64)
            padded = np.zeros((1, self.frame_samples), np.float32)
            padded[0, : tail.size] = self._leftover
            self._analyse(np.array([np.mean(tail * tail)]), padded)
        self._end_run(self._frames_done)
        if self._pending is not None:
            self._close(self._pending)
            self._pending = None
        self._total_samples = total
        self._update_regions()

    def speech_samples(self) -> int:
        """Total samples inside the final regions."""
        return sum(end - start for start, end in self.regions)

    def _analyse(self, powers: np.ndarray, frames: np.ndarray) -> None:
        """Decide ``[n]`` new frames (``[n, frame_samples]``, their mean-square ``powers``) and
        update the regions."""
        config = self.config
        level_db = 10.0 * np.log10(np.maximum(powers, _POWER_FLOOR))
        history = np.concatenate([self._powers, powers])
        if history.size < self._smooth + powers.size - 1:  # stream start: repeat the first frame
            history = np.concatenate([np.full(self._smooth + powers.size - 1 - history.size, history[0]), history])
        windows = np.lib.stride_tricks.sliding_window_view(history, self._smooth)
        smoothed_db = 10.0 * np.log10(np.maximum(windows.mean(axis=1), _POWER_FLOOR))
        extended = np.concatenate([self._smoothed_db, smoothed_db])
        floor_db = minimum_filter1d(extended, self._floor_window, mode="nearest", origin=self._floor_window // 2)
        floor_db = floor_db[self._smoothed_db.size :]
        speech_like = level_db >= np.maximum(floor_db + config.margin_db, config.min_level_dbfs)
        if self._model is not None:
            gated = level_db >= config.min_level_dbfs if config.gate else np.ones(level_db.size, bool)
            speech_like = np.zeros(level_db.size, bool)
            speech_like[gated] = self._model.speech(frames[gated])
        self._powers = history[max(0, history.size - (self._smooth - 1)) :]
        self._smoothed_db = extended[max(0, extended.size - (self._floor_window - 1)) :]
        self._track_runs(speech_like)

    def _track_runs(self, speech_like: np.ndarray) -> None:
        first = self._frames_done
        edges = np.flatnonzero(np.diff(speech_like.astype(np.int8), prepend=np.int8(self._open_start is not None)))
        for edge in edges.tolist():
            if speech_like[edge]:
                self._start_run(first + edge)
            else:
                self._end_run(first + edge)
        self._frames_done = first + speech_like.size
        if self._pending is not None and self._open_start is None and self._frames_done - self._pending[1] > self._bridge:
            self._close(self._pending)
            self._pending = None
        self._update_regions()

    def _start_run(self, start: int) -> None:
        if self._pending is not None and start - self._pending[1] > self._bridge:
            self._close(self._pending)
            self._pending = None
        self._open_start = start

    def _end_run(self, end: int) -> None:
        """Close the run going on; it joins the pending region (never more than the gap apart)."""
        if self._open_start is None:
            return
        if self._pending is None:
            self._pending = [self._open_start, end]
        else:
            self._pending[1] = end
        self._open_start = None

    def _close(self, region: list[int]) -> None:
        start, end = region
        if end - start >= self._min_frames:
            self._frame_regions.append((max(0, start - self._pad), end + self._pad))

    def _update_regions(self) -> None:
        limit = self._total_samples
        for start, end in self._frame_regions[len(self.regions) :]:
            end_sample = end * self.frame_samples
            self.regions.append((start * self.frame_samples, end_sample if limit is None else min(end_sample, limit)))


class _WebRtcFrames:
    """WebRTC's voice detector on frames of ``frame_s`` (16-bit PCM, as it takes them)."""

    def __init__(self, config: VadConfig, sample_rate: int) -> None:
        import webrtcvad

        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"vad.method webrtc works at 8, 16, 32 or 48 kHz, not {sample_rate} Hz")
        self._vad = webrtcvad.Vad(config.webrtc_mode)
        self.sample_rate = sample_rate
        self.frame_samples = int(round(config.frame_s * sample_rate))

    def speech(self, frames: np.ndarray) -> np.ndarray:
        """bool ``[n]`` for float ``[n, frame_samples]``."""
        pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
        return np.array([self._vad.is_speech(frame.tobytes(), self.sample_rate) for frame in pcm], dtype=bool)


class _SileroFrames:
    """The silero-vad network, chunk by chunk, its state carried along the channel."""

    def __init__(self, config: VadConfig, sample_rate: int) -> None:
        from silero_vad import load_silero_vad

        if sample_rate not in (8000, 16000):
            raise ValueError(f"vad.method silero works at 8 or 16 kHz, not {sample_rate} Hz")
        self._model = load_silero_vad()  # one per channel: the model object holds the LSTM state
        self._threshold = config.silero_threshold
        self.sample_rate = sample_rate
        self.frame_samples = 512 if sample_rate == 16000 else 256

    def speech(self, frames: np.ndarray) -> np.ndarray:
        """bool ``[n]`` for float ``[n, frame_samples]``."""
        import torch

        with torch.inference_mode():
            return np.array([float(self._model(torch.from_numpy(np.ascontiguousarray(frame, np.float32)),
                                               self.sample_rate)) >= self._threshold for frame in frames], dtype=bool)


def _frame_model(config: VadConfig, sample_rate: int) -> Any:
    """The frame classifier of ``vad.method`` (None: the energy rule)."""
    if config.method == "webrtc":
        return _WebRtcFrames(config, sample_rate)
    if config.method == "silero":
        return _SileroFrames(config, sample_rate)
    return None


def check_detector(config: VadConfig, sample_rate: int) -> None:
    """Refuse, once and before any work, a ``vad.method`` that cannot run at ``sample_rate``."""
    try:
        SpeechDetector(config, sample_rate)
    except ValueError as exc:
        raise UserError(f"{exc}; the model's sample rate decides the rate speech is detected at") from None


def detect_speech(samples: np.ndarray, sample_rate: int, config: VadConfig) -> np.ndarray:
    """Speech regions of a whole signal ``[n]``.

    Returns
    -------
    np.ndarray
        int64 ``[n_regions, 2]``: start and end sample of each region, sorted, not overlapping.
    """
    detector = SpeechDetector(config, sample_rate)
    detector.push(samples)
    detector.finish()
    return np.array(detector.regions, dtype=np.int64).reshape(-1, 2)
