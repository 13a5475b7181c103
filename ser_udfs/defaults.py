"""Where the default config files are: ``conf/`` of a source checkout, or the copy an installed
package ships as the package data ``ser_udfs/conf`` (``pip install .``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: A file every copy of the defaults holds (the mark that a folder is ours).
MARK = "features.toml"


def conf_dir() -> Path:
    """The folder of the default TOML files (``features.toml``, ``score.toml``, ``taxonomies.toml``, ...).

    The installed package data when there is one, else the checkout's ``conf/`` beside this package.
    """
    try:
        mark = importlib.resources.files("ser_udfs.conf") / MARK  # a namespace package: no __init__.py
    except ModuleNotFoundError:
        mark = None
    if mark is not None and mark.is_file():
        return Path(str(mark)).parent
    return Path(__file__).resolve().parent.parent / "conf"
