"""Emotion taxonomies: which classes a model predicts and how corpus labels map onto them.

A taxonomy lists its labels in output order and maps other canonical labels onto them
(``calm → neutral`` in ``core6``); rows with any other label are dropped and counted.
Taxonomies live in ``conf/taxonomies.toml``; a user passes a name from there, or a TOML file of
their own with the same layout (``file.toml`` holding one table, or ``file.toml:name``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ser_udfs.defaults import conf_dir
from ser_udfs.errors import UserError
from ser_udfs.settings import load_toml

logger = logging.getLogger(__name__)

DEFAULT_TAXONOMIES_PATH = conf_dir() / "taxonomies.toml"
NO_LABEL = "<none>"


@dataclass(frozen=True)
class Taxonomy:
    """A set of target classes and the mapping of other labels onto them.

    Attributes
    ----------
    name
        Name of the taxonomy (``core6``, ``ravdess8``, ``basic4`` or the user's).
    labels
        Target classes in the order a model outputs them.
    mapping
        Other canonical label → target class (e.g. ``{"calm": "neutral"}``).
    """

    name: str
    labels: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labels or not all(isinstance(label, str) and label for label in self.labels):
            raise UserError(f"taxonomy {self.name!r}: 'labels' must be a non-empty list of names")
        if len(set(self.labels)) != len(self.labels):
            raise UserError(f"taxonomy {self.name!r}: 'labels' repeats a label: {list(self.labels)}")
        for source, target in self.mapping.items():
            if target not in self.labels:
                raise UserError(
                    f"taxonomy {self.name!r}: 'map' sends {source!r} to {target!r}, "
                    f"which is not one of its labels {list(self.labels)}"
                )
            if source in self.labels:
                raise UserError(f"taxonomy {self.name!r}: {source!r} is both a label and a key of 'map'")

    def target(self, label: str | None) -> str | None:
        """The class ``label`` belongs to, or ``None`` when the taxonomy drops it."""
        if label in self.labels:
            return label
        return self.mapping.get(label) if label is not None else None

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "labels", "map"}``, JSON-serialisable (stored in a bundle's config)."""
        return {"name": self.name, "labels": list(self.labels), "map": dict(self.mapping)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None) -> "Taxonomy":
        """Build from a TOML table or :meth:`to_dict` output; unknown keys are refused."""
        name = name if name is not None else str(data.get("name", "custom"))
        unknown = sorted(set(data) - {"name", "labels", "map"})
        if unknown:
            raise UserError(f"taxonomy {name!r}: unknown key(s) {unknown}; a taxonomy has 'labels' and 'map'")
        labels = data.get("labels")
        mapping = data.get("map", {})
        if not isinstance(labels, (list, tuple)):
            raise UserError(f"taxonomy {name!r}: 'labels' must be a list of label names")
        if not isinstance(mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise UserError(f"taxonomy {name!r}: 'map' must be a table of label = label")
        return cls(name=name, labels=tuple(labels), mapping=dict(mapping))


@dataclass(frozen=True)
class TaxonomyReport:
    """What mapping a frame onto a taxonomy kept and dropped.

    Attributes
    ----------
    kept
        Target label → number of rows kept, in taxonomy order (zero counts included).
    dropped
        Source label (``"<none>"`` for a missing label) → number of rows dropped.
    """

    kept: dict[str, int]
    dropped: dict[str, int]

    @property
    def missing_labels(self) -> list[str]:
        """Taxonomy labels without a single row."""
        return [label for label, count in self.kept.items() if count == 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for reports."""
        return {"kept": dict(self.kept), "dropped": dict(self.dropped), "missing_labels": self.missing_labels}


def load_taxonomy(spec: str, *, taxonomies_path: str | Path = DEFAULT_TAXONOMIES_PATH) -> Taxonomy:
    """Resolve a taxonomy given by name or by a user's TOML file.

    Parameters
    ----------
    spec
        A table name in ``taxonomies_path`` (``core6``); a path to a TOML file holding exactly
        one table (``mine.toml``); or ``mine.toml:name`` to pick one table from a file.
    taxonomies_path
        The file of named taxonomies (``conf/taxonomies.toml`` by default).
    """
    file_part, sep, table = spec.rpartition(":")
    if sep and file_part.endswith(".toml"):
        return _taxonomy_from_file(Path(file_part), table)
    if spec.endswith(".toml"):
        return _taxonomy_from_file(Path(spec), None)
    named = load_toml(taxonomies_path)
    if spec not in named:
        raise UserError(
            f"unknown taxonomy {spec!r}: use one of {sorted(named)} from {taxonomies_path}, "
            "or the path of a TOML file with your own mapping"
        )
    return Taxonomy.from_dict(named[spec], name=spec)


def _taxonomy_from_file(path: Path, table: str | None) -> Taxonomy:
    tables = load_toml(path)
    if "labels" in tables and table is None:
        return Taxonomy.from_dict(tables, name=path.stem)
    if table is None:
        if len(tables) != 1:
            raise UserError(
                f"taxonomy file {path} holds {len(tables)} tables {sorted(tables)}; "
                f"pick one with {path}:NAME"
            )
        table = next(iter(tables))
    if table not in tables or not isinstance(tables[table], Mapping):
        raise UserError(f"taxonomy file {path} has no table {table!r}; it has {sorted(tables)}")
    return Taxonomy.from_dict(tables[table], name=table)


def apply_taxonomy(frame: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, TaxonomyReport]:
    """Map the ``label`` column onto ``taxonomy`` and drop the rows it does not cover.

    Parameters
    ----------
    frame
        Features rows with a ``label`` column (nullable).

    Returns
    -------
    (mapped, report)
        ``mapped`` holds the kept rows (index reset) with ``label`` replaced by the target class
        and the original in ``source_label``; ``report`` counts kept and dropped rows.
    """
    if "label" not in frame.columns:
        raise UserError("the features table has no 'label' column; train and evaluate need labelled clips")
    source = frame["label"].astype(object).where(frame["label"].notna(), None)
    targets = source.map(taxonomy.target)
    keep = targets.notna().to_numpy()
    mapped = frame.loc[keep].copy()
    mapped["source_label"] = source[keep].to_numpy()
    mapped["label"] = targets[keep].to_numpy()
    mapped = mapped.reset_index(drop=True)
    counts = Counter(mapped["label"])
    dropped = Counter(NO_LABEL if label is None else str(label) for label in source[~keep])
    report = TaxonomyReport(
        kept={label: int(counts.get(label, 0)) for label in taxonomy.labels},
        dropped=dict(sorted(dropped.items())),
    )
    logger.info(
        "taxonomy %s: kept %d rows %s, dropped %d rows %s",
        taxonomy.name, len(mapped), report.kept, int(sum(dropped.values())), report.dropped,
    )
    return mapped, report
