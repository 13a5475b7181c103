"""The eGeMAPS v02 functionals of openSMILE (88 values per clip), an optional feature column.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al., 2016): pitch, jitter,
shimmer, loudness, harmonics-to-noise ratio, formants, spectral slopes and their statistics over
a clip, the set affective-computing studies report against. Computed with the ``opensmile``
package (its SMILEapi library ships in the wheel) on the preprocessed clip, as the other
features are, when ``[egemaps] enabled = true``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

#: Values per clip (eGeMAPSv02 functionals).
N_EGEMAPS = 88


@functools.lru_cache(maxsize=1)
def _smile() -> Any:
    """One openSMILE extractor per process (building one parses the config files: ~0.3 s)."""
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def egemaps_names() -> list[str]:
    """The name of each of the :data:`N_EGEMAPS` values, in order (``F0semitoneFrom27.5Hz_sma3nz_amean``, ...)."""
    return list(_smile().feature_names)


def egemaps_functionals(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """eGeMAPS v02 functionals of each clip.

    Parameters
    ----------
    clips
        float32 ``[batch, n]`` preprocessed clips.
    sample_rate
        Their rate in Hz.

    Returns
    -------
    np.ndarray
        float32 ``[batch, 88]``; a value openSMILE leaves undefined (no voiced frame in a clip of
        noise) is 0.
    """
    smile = _smile()
    values = np.zeros((len(clips), N_EGEMAPS), dtype=np.float32)
    for index, clip in enumerate(np.asarray(clips, dtype=np.float32)):
        row = smile.process_signal(clip, sample_rate).to_numpy(dtype=np.float32)[0]
        values[index] = np.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0)
    return values
