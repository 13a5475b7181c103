"""The student report's per-clip code, reimplemented as the speed baseline.

The report turned each file into features with librosa's high-level calls, one after the other:
``librosa.load(path, sr=16000)`` (librosa's default resampler, soxr ``HQ`` in librosa 0.10+),
``librosa.feature.melspectrogram(n_mels=128, fmax=8000)`` then ``librosa.power_to_db``,
``librosa.feature.mfcc(n_mfcc=13)`` and ``librosa.feature.zero_crossing_rate``. Each of the
mel and MFCC calls builds its own mel filterbank and computes its own STFT; there is no silence
trimming, normalisation or fixed length. The project's per-clip function
(:func:`ser_udfs.features.extract_file.extract_file`) does more (normalise, trim, pad) with one STFT per clip;
``bench/extract_throughput.py`` times both on the same files.
"""

from __future__ import annotations

import numpy as np

REPORT_SAMPLE_RATE_HZ = 16000


def report_clip_features(path: str) -> dict[str, np.ndarray]:
    """Features of one audio file, computed as the report did.

    Returns
    -------
    ``{"log_mel": [128, frames], "mfcc": [13, frames], "zcr": [1, frames]}`` float32 arrays.
    """
    import librosa

    waveform, sample_rate = librosa.load(path, sr=REPORT_SAMPLE_RATE_HZ)
    mel = librosa.feature.melspectrogram(y=waveform, sr=sample_rate, n_mels=128, fmax=8000)
    return {
        "log_mel": librosa.power_to_db(mel),
        "mfcc": librosa.feature.mfcc(y=waveform, sr=sample_rate, n_mfcc=13),
        "zcr": librosa.feature.zero_crossing_rate(waveform),
    }
