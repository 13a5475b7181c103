"""The files of a model bundle: names, digests, JSON, safetensors, tensor checks (below the models).

Layout::

    BUNDLE/config.json          model kind, labels, taxonomy, inputs, architecture, the exact
                                feature config and its version, training data summary, split,
                                seed, hyper-parameters, library versions, weight digests, the
                                digest of the labels and taxonomy (``labels_sha256``), the
                                temperature scaling of the probabilities (``calibration``) and
                                its digest (``calibration_sha256``)
    BUNDLE/model.safetensors    weights (CNN state dict, an ensemble's members under ``members.K.``;
                                logreg scaler mean/scale, coef, intercept; a transformer's
                                Hugging Face tensors, prefixed ``encoder.``/``head.`` for embedding models)
    BUNDLE/stats_model.safetensors  a CNN's fused stats model (``cnn.stats_fusion_weight > 0``):
                                logreg tensors; ``stats_fusion`` in ``config.json`` holds its weight
    BUNDLE/metrics.json         test metrics (per fold and mean ± std for cross-validation)
    BUNDLE/encoder/             a transformer's Hugging Face model and extractor configs in Hugging
                                Face's own format, for people and tools (loading reads config.json)
    BUNDLE/*.png                confusion matrix, reliability diagram, training curves

No pickle anywhere: weights are safetensors, everything else is JSON (pickle files someone puts
in a bundle folder are never opened: :func:`pickle_file_names` lists them for a warning). ``config.json`` is
written last, so a bundle whose writing was interrupted is refused on loading. Loading needs
only :func:`loading_file_names`: ``config.json`` and the ``*.safetensors`` files, which
:func:`read_bundle_files` reads once into bytes; everything here parses those bytes, so a bundle
can be rebuilt where its folder is not (a Spark worker). This module knows nothing of the
model kinds: :mod:`training.bundle.load` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch

BUNDLE_FORMAT = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.safetensors"
STATS_MODEL_FILE = "stats_model.safetensors"
#: Folder with a transformer's Hugging Face config files (for people and tools; loading uses config.json).
HF_FILES_DIR = "encoder"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE)
WEIGHTS_SUFFIX = ".safetensors"
#: Endings of pickle files (Python, joblib, torch): never loaded; loading names them in a warning.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth")
VERSIONED_LIBRARIES = (
    "numpy", "pandas", "scikit-learn", "torch", "safetensors", "pyarrow", "audiomentations", "transformers",
)


# --------------------------------------------------------------------------------------------
# Which files, and their digests


def weight_file_names(path: Path) -> list[str]:
    """Bundle-relative names (POSIX) of every ``*.safetensors`` file under ``path``, sorted."""
    return [weights.relative_to(path).as_posix() for weights in sorted(path.rglob(f"*{WEIGHTS_SUFFIX}"))]


def loading_file_names(path: Path) -> list[str]:
    """The files loading reads: ``config.json`` and every ``*.safetensors`` file."""
    return [CONFIG_FILE, *weight_file_names(path)]


def missing_required_files(path: Path) -> list[str]:
    """Names of :data:`REQUIRED_FILES` that ``path`` lacks (one there but not a regular file is
    refused when read, by :func:`read_bundle_files`)."""
    return [name for name in REQUIRED_FILES if not os.path.lexists(path / name)]


def pickle_file_names(path: Path) -> list[str]:
    """Bundle-relative names (POSIX) of the files under ``path`` that end like pickles, sorted.

    Loading never opens them (weights are safetensors, everything else JSON).
    """
    found = (item for item in path.rglob("*") if item.name.lower().endswith(PICKLE_SUFFIXES))
    return sorted(item.relative_to(path).as_posix() for item in found)


def read_bundle_files(path: Path) -> dict[str, bytes]:
    """The bytes of :func:`loading_file_names`, by bundle-relative name."""
    return _read_files(path, loading_file_names(path))


def read_weight_files(path: Path) -> dict[str, bytes]:
    """The bytes of every ``*.safetensors`` file under ``path``, by bundle-relative name."""
    return _read_files(path, weight_file_names(path))


def _read_files(path: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of ``names`` under ``path``; only regular files are opened (a FIFO would block)."""
    files = {}
    for name in names:
        try:
            if not stat.S_ISREG(os.stat(path / name).st_mode):
                raise UserError(
                    f"model bundle {path}: {name} is not a regular file (a FIFO, socket, device or folder); "
                    "remove it, or train the bundle again"
                )
            files[name] = (path / name).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {path / name} ({exc}); the bundle is damaged, train it again") from None
    return files


def weight_digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """SHA-256 (hex) of each ``*.safetensors`` entry of ``files``, by name, sorted by name."""
    return {name: hashlib.sha256(files[name]).hexdigest() for name in sorted(files) if name.endswith(WEIGHTS_SUFFIX)}


def labels_digest(labels: list[str], taxonomy: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a bundle's label list and taxonomy (``config.json``'s ``labels_sha256``).

    ``taxonomy`` is :meth:`training.taxonomy.Taxonomy.to_dict`'s form; the digest covers the
    names and order of the model's output columns, which no tensor check can see.
    """
    canonical = json.dumps({"labels": list(labels), "taxonomy": taxonomy}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def calibration_digest(calibration: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a bundle's ``calibration`` entry (``config.json``'s ``calibration_sha256``)."""
    canonical = json.dumps(dict(calibration), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide a model's numbers."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------------------------
# JSON


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON (NaN allowed, as metrics of empty classes have it)."""
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def parse_json(data: bytes, *, where: str | Path) -> dict[str, Any]:
    """The JSON object in ``data``, the content of the file ``where``."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {where} ({exc}); the bundle is damaged, train it again") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{where} does not hold a JSON object; the bundle is damaged, train it again")
    return parsed


# --------------------------------------------------------------------------------------------
# safetensors


def write_numpy_tensors(file: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write NumPy arrays (made contiguous) to a safetensors file."""
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, file)


def write_torch_tensors(file: Path, tensors: Mapping[str, "torch.Tensor"]) -> None:
    """Write tensors (moved to the CPU, contiguous, storage not shared) to a safetensors file."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    ready = {}
    for name, tensor in tensors.items():
        data = tensor.detach().to("cpu").contiguous()
        pointer = data.untyped_storage().data_ptr()
        ready[name] = data.clone() if pointer in seen else data
        seen.add(pointer)
    save_file(ready, str(file))


def read_numpy_tensors(files: Mapping[str, bytes], name: str, *, where: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the safetensors file ``name`` of a bundle's ``files``."""
    from safetensors.numpy import load

    try:
        tensors = load(files[name])
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise UserError(f"model bundle {where}: cannot read {name} ({exc})") from None
    _check_finite(
        [key for key, array in tensors.items() if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all()],
        name, where=where,
    )
    return tensors


def read_torch_tensors(files: Mapping[str, bytes], name: str = WEIGHTS_FILE, *, where: str | Path) -> dict[str, "torch.Tensor"]:
    """The tensors (on the CPU) of the safetensors file ``name`` of a bundle's ``files``."""
    from safetensors.torch import load

    import torch

    try:
        tensors = load(files[name])
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise UserError(f"model bundle {where}: cannot read {name} ({exc})") from None
    _check_finite(
        [key for key, tensor in tensors.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())],
        name, where=where,
    )
    return tensors


def _check_finite(non_finite: list[str], file_name: str, *, where: str | Path) -> None:
    """Refuse weights holding NaN or infinity (``non_finite``: the names of such tensors)."""
    if non_finite:
        raise UserError(
            f"model bundle {where}: {file_name} holds NaN or infinite values in {', '.join(sorted(non_finite)[:5])}; "
            "the weights are broken (a diverged training run or a damaged file), train the bundle again"
        )


def check_tensor_shapes(
    expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, Any], *, where: str | Path, file_name: str = WEIGHTS_FILE
) -> None:
    """Refuse ``tensors`` whose names or shapes differ from ``expected`` (name → shape).

    Raises
    ------
    UserError
        Naming up to five missing, unexpected or wrongly shaped tensors with their shapes.
    """
    found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if set(expected) != set(found):
        raise UserError(
            f"model bundle {where}: {file_name} lacks tensors {sorted(set(expected) - set(found))[:5]} "
            f"and has unexpected {sorted(set(found) - set(expected))[:5]}"
        )
    wrong = [f"{name} {list(found[name])} (expected {list(shape)})" for name, shape in expected.items() if found[name] != shape]
    if wrong:
        raise UserError(f"model bundle {where}: tensors with wrong shapes: {', '.join(wrong[:5])}")


def state_shapes(module: "torch.nn.Module") -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor in ``module.state_dict()``."""
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def model_from_state(factory: Callable[[], Any], tensors: Mapping[str, "torch.Tensor"], *, where: str | Path) -> Any:
    """Build a module with ``factory()`` on the meta device and give it ``tensors``, checked.

    Raises
    ------
    UserError
        When tensor names or shapes do not match the architecture.
    """
    import torch

    with torch.device("meta"):
        model = factory()
    check_tensor_shapes(state_shapes(model), tensors, where=where)
    model.load_state_dict(dict(tensors), strict=True, assign=True)
    leftover = [name for name, value in [*model.named_parameters(), *model.named_buffers()] if value.is_meta]
    if leftover:
        with torch.device("cpu"):
            model = factory()
        model.load_state_dict(dict(tensors), strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Hugging Face configs inside config.json


def write_hf_model(path: Path, tensors: Mapping[str, "torch.Tensor"], model_config: Any, extractor: Any) -> dict[str, Any]:
    """Write a transformer's ``model.safetensors`` and ``encoder/``; return its ``architecture`` entries.

    Parameters
    ----------
    path
        The bundle folder.
    tensors
        The weights (Hugging Face names, prefixed as the model kind chooses).
    model_config, extractor
        The Hugging Face model config and feature extractor.

    Returns
    -------
    dict
        ``{"hf_config", "feature_extractor"}``: the two configs as dicts, for ``config.json``'s
        ``architecture`` (which is what loading reads; ``encoder/config.json`` and
        ``encoder/preprocessor_config.json`` hold the same in Hugging Face's format).
    """
    write_torch_tensors(path / WEIGHTS_FILE, tensors)
    folder = path / HF_FILES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    model_config.to_json_file(str(folder / "config.json"))
    extractor.to_json_file(str(folder / "preprocessor_config.json"))
    return {"hf_config": model_config.to_dict(), "feature_extractor": extractor.to_dict()}


def read_hf_model(
    files: Mapping[str, bytes], config: Mapping[str, Any], *, where: str | Path
) -> tuple[dict[str, Any], Any, Any, dict[str, "torch.Tensor"]]:
    """What :func:`write_hf_model` wrote, from a bundle's files and parsed ``config.json``.

    Returns
    -------
    (architecture, model_config, extractor, tensors)
        ``config.json``'s ``architecture``, the Hugging Face model config and feature
        extractor rebuilt from it, and the tensors of ``model.safetensors`` (not yet checked).
    """
    architecture = dict(config.get("architecture") or {})
    model_config = config_from_dict(architecture.get("hf_config") or {}, where=where)
    extractor = extractor_from_dict(architecture.get("feature_extractor") or {}, where=where)
    return architecture, model_config, extractor, read_torch_tensors(files, where=where)


def config_from_dict(data: Mapping[str, Any], *, where: str | Path) -> Any:
    """A Hugging Face model config from :func:`write_hf_model`'s ``hf_config``."""
    from transformers import AutoConfig

    values = dict(data)
    model_type = values.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"model bundle {where}: bad Hugging Face config in config.json ({exc})") from None


def extractor_from_dict(data: Mapping[str, Any], *, where: str | Path) -> Any:
    """A feature extractor from :func:`write_hf_model`'s ``feature_extractor``."""
    import transformers
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    name = str(data.get("feature_extractor_type", ""))
    cls = getattr(transformers, name, None) if name.endswith("FeatureExtractor") else None
    if not (isinstance(cls, type) and issubclass(cls, FeatureExtractionMixin)):
        raise UserError(f"model bundle {where}: unknown feature extractor type {name!r} in config.json")
    return cls.from_dict(dict(data))
