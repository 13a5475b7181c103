"""How far the project's numbers are from librosa's on the benchmark's own clips.

Two comparisons, each on the same input for both sides:

* decode + resample to 16 kHz: :func:`ser_udfs.audio.decode.decode_audio` and
  :func:`ser_udfs.audio.preprocess.to_mono_target_rate` against ``librosa.load(path, sr=16000)``;
* features of the project's preprocessed clip: :func:`ser_udfs.features.compute.compute_features_batch`
  against ``librosa.feature.melspectrogram`` → ``librosa.power_to_db``,
  ``librosa.feature.mfcc(S=...)`` and ``librosa.feature.zero_crossing_rate`` with the same
  settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ser_udfs.audio.decode import decode_audio
from ser_udfs.features.config import FeatureConfig
from ser_udfs.features.compute import compute_features_batch
from ser_udfs.audio.preprocess import condition_clip, to_mono_target_rate

#: Largest absolute difference accepted per quantity (units in :data:`UNITS`).
TOLERANCES = {"waveform_16k": 1e-4, "log_mel": 1e-3, "mfcc": 1e-3, "zcr": 1e-6}
UNITS = {"waveform_16k": "full scale", "log_mel": "dB", "mfcc": "(dB-scaled DCT)", "zcr": "crossings/sample"}


@dataclass(frozen=True)
class Deviation:
    """Largest absolute difference of one quantity over the compared clips."""

    name: str
    max_abs: float
    tolerance: float
    unit: str

    @property
    def ok(self) -> bool:
        """Whether the deviation is within the tolerance."""
        return self.max_abs <= self.tolerance


def librosa_features(clip: np.ndarray, sample_rate: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """librosa's log-mel, MFCC and ZCR of a preprocessed clip ``[n]`` with the project's settings."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=clip, sr=sample_rate, n_fft=config.mel.n_fft, win_length=config.mel.win_length,
        hop_length=config.mel.hop_length, n_mels=config.mel.n_mels, fmin=config.mel.fmin_hz, fmax=config.mel.fmax_hz,
    )
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=config.mel.top_db)
    return {
        "log_mel": log_mel,
        "mfcc": librosa.feature.mfcc(S=log_mel, n_mfcc=config.mfcc.n_mfcc),
        "zcr": librosa.feature.zero_crossing_rate(
            clip, frame_length=config.zcr.frame_length, hop_length=config.zcr.hop_length
        ),
    }


def compare_with_librosa(paths: Sequence[str], config: FeatureConfig) -> list[Deviation]:
    """Largest deviations from librosa over ``paths`` (the default config has no MFCC deltas)."""
    import librosa

    worst = dict.fromkeys(TOLERANCES, 0.0)
    rate = config.audio.target_sample_rate_hz
    for path in paths:
        decoded, info = decode_audio(path)
        mono = to_mono_target_rate(decoded, info.sample_rate, config.audio)
        reference, _ = librosa.load(path, sr=rate, mono=True)
        length = min(mono.size, reference.size)
        worst["waveform_16k"] = max(worst["waveform_16k"], float(np.max(np.abs(mono[:length] - reference[:length]))))
        clip = condition_clip(mono, config.audio)
        ours = compute_features_batch(clip[None, :], rate, config)
        theirs = librosa_features(clip, rate, config)
        for name in ("log_mel", "mfcc", "zcr"):
            worst[name] = max(worst[name], float(np.max(np.abs(ours[name][0] - theirs[name]))))
    return [Deviation(name, worst[name], TOLERANCES[name], UNITS[name]) for name in TOLERANCES]
