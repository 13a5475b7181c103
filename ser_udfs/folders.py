"""What a local folder holds, for messages that tell a user they passed the wrong one.

Every job output has a ``_manifest.json`` naming the job that wrote it, and a model bundle has
a ``config.json`` naming its model kind; :func:`what_folder_holds` reads them (never anything
else) and says which it is in words.
"""

from __future__ import annotations

import json
from pathlib import Path

from ser_udfs.spark.listing import local_path

#: How messages name the output of each job (``_manifest.json``'s ``job``).
JOB_OUTPUTS = {
    "extract_features": "a features table (written by jobs/extract_features.py)",
    "extract_embeddings": "an embeddings table (written by jobs/extract_embeddings.py)",
    "score_calls": "the scores of calls (written by jobs/score_calls.py)",
}


def what_folder_holds(uri: str) -> str | None:
    """``"a features table (written by jobs/extract_features.py)"``, ``"a model bundle (...)"``, ...
    for a local folder this project wrote; None when it is not local, missing, or not recognised."""
    path = local_path(uri)
    if path is None or not Path(path).is_dir():
        return None
    folder = Path(path)
    for name, key in (("_manifest.json", "job"), ("config.json", "model_kind")):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if key == "model_kind" and value:
            return f"a {value} model bundle (written by jobs/train.py)"
        if value in JOB_OUTPUTS:
            return JOB_OUTPUTS[value]
    return None
