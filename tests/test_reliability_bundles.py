"""Poisoned model bundles: FIFOs among the weights, NaN weights, edited labels, planted pickles.

Each case is something an adversarial pass over the jobs found accepted or hanging (issue 22);
a bundle is refused with one sentence naming it, or (a pickle beside the weights) loaded with
the pickle never opened and a warning naming it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ser_udfs.calls.config import CallScoringConfig
from ser_udfs.calls.stream import check_predictor, score_call
from ser_udfs.errors import ClipError, UserError
from ser_udfs.synthetic.calls import synth_call, write_call
from tests.builders import STEREO_TURNS, call_bundle, random_logreg_bundle
from training.bundle.format import CONFIG_FILE, WEIGHTS_FILE, read_weight_files, weight_digests
from training.bundle.load import Bundle, load_bundle


def _load_with_deadline(bundle: Path, fifo: Path, seconds: float = 20.0) -> BaseException | Bundle:
    """``load_bundle(bundle)`` in a thread; a reader stuck opening ``fifo`` is released and the test fails."""
    outcome: list[BaseException | Bundle] = []

    def target() -> None:
        try:
            outcome.append(load_bundle(bundle))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # gives the stuck reader an end of file
        thread.join(seconds)
        pytest.fail(f"load_bundle hung opening the FIFO {fifo.name}")
    return outcome[0]


@pytest.mark.parametrize("name", ["extra.safetensors", CONFIG_FILE])
def test_a_fifo_in_a_bundle_is_refused_without_opening_it(tmp_path: Path, name: str) -> None:
    bundle = random_logreg_bundle(tmp_path / "bundle")
    fifo = bundle / name
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    outcome = _load_with_deadline(bundle, fifo)
    assert isinstance(outcome, UserError), outcome
    message = str(outcome)
    assert f"{name} is not a regular file" in message and str(bundle) in message and "\n" not in message


def _recompute_digests(bundle: Path) -> None:
    config = json.loads((bundle / CONFIG_FILE).read_text())
    config["weights_sha256"] = weight_digests(read_weight_files(bundle))
    (bundle / CONFIG_FILE).write_text(json.dumps(config))


def test_weights_that_are_not_finite_are_refused_even_with_fresh_checksums(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    for value in (np.nan, np.inf):
        bundle = random_logreg_bundle(tmp_path / f"bundle-{value}")
        tensors = load_file(bundle / WEIGHTS_FILE)
        tensors["coef"] = np.full_like(tensors["coef"], value)
        save_file(tensors, bundle / WEIGHTS_FILE)
        _recompute_digests(bundle)
        with pytest.raises(UserError, match="NaN or infinite values in coef") as refused:
            load_bundle(bundle)
        assert str(bundle) in str(refused.value) and "\n" not in str(refused.value)


def test_torch_weights_that_are_not_finite_are_refused() -> None:
    import torch
    from safetensors.torch import save

    from training.bundle.format import read_torch_tensors

    good = {"w": torch.ones(3), "steps": torch.tensor(4)}
    assert set(read_torch_tensors({WEIGHTS_FILE: save(good)}, where="b")) == {"w", "steps"}
    bad = {"w": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16), "steps": torch.tensor(4)}
    with pytest.raises(UserError, match="model bundle b: model.safetensors holds NaN or infinite values in w"):
        read_torch_tensors({WEIGHTS_FILE: save(bad)}, where="b")


class _BrokenModel:
    """A predictor whose probabilities are NaN for windows louder than ``loud``."""

    adapts_to_speaker = False

    def __init__(self, bundle: Bundle, loud: float) -> None:
        self.bundle, self.loud = bundle, loud
        self.labels = bundle.labels
        self.feature_config = bundle.feature_config

    def window_outputs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        probabilities = self.bundle.predict_proba(batch)
        rms = np.sqrt(np.mean(np.square(batch["waveform"]), axis=1))
        probabilities[rms > self.loud] = np.nan
        return probabilities

    def channel_probabilities(self, outputs: np.ndarray, *, adapt: bool) -> np.ndarray:
        return outputs


def test_a_window_the_model_gives_nan_probabilities_is_an_error_of_its_call(tmp_path: Path) -> None:
    bundle = load_bundle(call_bundle(tmp_path / "bundle"))
    call = synth_call(STEREO_TURNS, duration_s=18.0, channels=2, sample_rate=8000, seed=1)
    call = write_call(tmp_path / "call.wav", call, 8000)
    with pytest.raises(ClipError) as failed:
        score_call(call, _BrokenModel(bundle, loud=0.0), CallScoringConfig())
    assert failed.value.kind == "internal"
    assert "NaN or infinite probabilities" in failed.value.message and "\n" not in failed.value.message
    with pytest.raises(UserError, match="NaN or infinite probabilities"):
        check_predictor(_BrokenModel(bundle, loud=0.0), CallScoringConfig().window)


def _edit_config(bundle: Path, edit) -> None:
    config = json.loads((bundle / CONFIG_FILE).read_text())
    edit(config)
    (bundle / CONFIG_FILE).write_text(json.dumps(config))


def test_labels_are_checked_against_the_taxonomy_and_covered_by_a_digest(tmp_path: Path, caplog) -> None:
    good = random_logreg_bundle(tmp_path / "good")
    assert load_bundle(good).labels == ("angry", "sad")
    assert "labels_sha256" in json.loads((good / CONFIG_FILE).read_text())

    def swap_labels(config: dict) -> None:
        config["labels"] = config["labels"][::-1]

    def rename_label(config: dict) -> None:
        config["labels"][0] = "furious"

    def swap_labels_and_taxonomy(config: dict) -> None:
        config["labels"] = config["labels"][::-1]
        config["taxonomy"]["labels"] = config["taxonomy"]["labels"][::-1]

    def rename_in_both(config: dict) -> None:
        config["labels"][0] = config["taxonomy"]["labels"][0] = "furious"

    cases = {
        "labels swapped": (swap_labels, "not in the order of its taxonomy"),
        "label renamed": (rename_label, "'furious' is not a label of its taxonomy"),
        "labels and taxonomy swapped": (swap_labels_and_taxonomy, "labels or taxonomy were edited"),
        "renamed in labels and taxonomy": (rename_in_both, "labels or taxonomy were edited"),
    }
    for index, (what, (edit, message)) in enumerate(cases.items()):
        bundle = random_logreg_bundle(tmp_path / f"edited-{index}")
        _edit_config(bundle, edit)
        with pytest.raises(UserError, match=message) as refused:
            load_bundle(bundle)
        assert str(bundle) in str(refused.value) and "\n" not in str(refused.value), what

    old = random_logreg_bundle(tmp_path / "old")
    _edit_config(old, lambda config: config.pop("labels_sha256"))
    with caplog.at_level(logging.WARNING, logger="training.bundle.load"):
        assert load_bundle(old).labels == ("angry", "sad")
    assert any("no labels digest" in record.getMessage() for record in caplog.records)
    _edit_config(old, swap_labels)
    with pytest.raises(UserError, match="not in the order of its taxonomy"):
        load_bundle(old)


def test_a_pickle_beside_the_weights_is_never_opened_and_named_in_a_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    import pickle

    import torch

    def forbidden(*args, **kwargs):
        raise AssertionError("a bundle was loaded with pickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    bundle = random_logreg_bundle(tmp_path / "bundle")
    (bundle / "model.pkl").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    (bundle / "sub").mkdir()
    (bundle / "sub" / "weights.pt").write_bytes(b"not even read")
    with caplog.at_level(logging.WARNING, logger="training.bundle.load"):
        assert load_bundle(bundle).labels == ("angry", "sad")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("model.pkl" in text and "sub/weights.pt" in text and "never loaded" in text for text in warnings), warnings
