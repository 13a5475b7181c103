"""The CNN: determinism, masking, inputs, and training in a two-process DDP group."""

from __future__ import annotations

import multiprocessing
import os
import socket
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import pytest
import torch

from ser_udfs.errors import UserError
from training.models.cnn import (
    CnnArchitecture,
    CnnConfig,
    CnnEnsemble,
    build_model,
    member_seed,
    model_input,
    networks,
    predict_proba,
    spec_augment,
    train_model,
)
from training.models.cnn_distributed import run_training_process, train_distributed
from training.metrics import loss_and_ua

torch.set_num_threads(1)

CONFIG = CnnConfig(channels=(4, 8), max_epochs=2, patience=5, batch_size=8, freq_mask_max_rows=3, time_mask_max_frames=3)
ROWS, FRAMES, CLASSES = 10, 18, 3


def _data(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    features = rng.normal(-30, 5, (n, ROWS, FRAMES)).astype(np.float32)
    features[np.arange(n), labels] += 20
    return features, labels


def _weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [tensor.detach().numpy().copy() for tensor in model.state_dict().values()]


@pytest.mark.parametrize("config", [CONFIG, replace(CONFIG, normalisation="dataset", pooling="mean_max", mixup_alpha=0.4)])
def test_training_is_deterministic_for_a_seed(config: CnnConfig) -> None:
    features, labels = _data()
    runs = []
    for _ in range(2):
        model = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=5)
        history = train_model(model, features, labels, config, seed=5, validation=_data(9, seed=1))
        runs.append((model, history))
    (first, history_a), (second, history_b) = runs
    assert history_a.train_loss == history_b.train_loss and len(history_a.train_loss) == 2
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_array_equal(a, b)
    probabilities = predict_proba(first, features)
    assert probabilities.shape == (24, CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("change", [
    {"device": "tpu"}, {"stats_fusion_weight": 1.0}, {"stats_fusion_weight": -0.1}, {"stats_normalisation": "corpus"},
    {"stats_regularisation_c": 0.0}, {"stats_regularisation_search": (0.1, -1.0)},
])
def test_bad_device_and_stats_fusion_settings_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cnn\\."):
        replace(CONFIG, **change)


def test_training_on_a_gpu_torch_cannot_see_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    features, labels = _data()
    config = replace(CONFIG, device="cuda")
    model = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=5)
    with pytest.raises(UserError, match="no GPU"):
        train_model(model, features, labels, config, seed=5)


def test_auto_device_without_a_gpu_trains_on_the_cpu_like_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    features, labels = _data()
    weights = []
    for device in ("cpu", "auto"):
        config = replace(CONFIG, device=device)
        model = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=5)
        train_model(model, features, labels, config, seed=5)
        weights.append(_weights(model))
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_the_best_epoch() -> None:
    features, labels = _data()
    config = replace(CONFIG, max_epochs=8, patience=2, early_stopping_tolerance_se=0.0)
    model = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=0)
    validation = _data(9, seed=1)
    history = train_model(model, features, labels, config, seed=0, validation=validation)
    assert len(history.train_loss) == min(history.best_epoch + config.patience, config.max_epochs)
    kept = history.best_epoch - 1
    best_so_far = np.maximum.accumulate(history.validation_ua)
    qualifies = np.array(history.validation_ua) >= best_so_far
    assert qualifies[kept] and not qualifies[kept + 1 :].any()
    loss, ua = loss_and_ua(predict_proba(model, validation[0]), validation[1])
    assert (loss, ua) == pytest.approx((history.validation_loss[kept], history.validation_ua[kept]))


def test_a_wide_tolerance_keeps_the_last_epoch() -> None:
    features, labels = _data()
    config = replace(CONFIG, max_epochs=4, patience=1, early_stopping_tolerance_se=100.0)
    model = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=0)
    history = train_model(model, features, labels, config, seed=0, validation=_data(9, seed=1))
    assert history.best_epoch == len(history.train_loss) == 4


def test_an_ensemble_averages_its_members_probabilities() -> None:
    features, labels = _data()
    config = replace(CONFIG, ensemble=2)
    members = []
    for member in range(2):
        network = build_model(config, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=member_seed(4, member))
        train_model(network, features, labels, config, seed=member_seed(4, member))
        members.append(network)
    ensemble = CnnEnsemble(CnnArchitecture.from_config(config, input_rows=(ROWS,), n_classes=CLASSES), members)
    assert networks(ensemble) == members and member_seed(4, 0) == 4
    first, second = (predict_proba(network, features) for network in members)
    assert np.abs(first - second).max() > 1e-3  # different seeds, different networks
    np.testing.assert_allclose(predict_proba(ensemble, features), (first + second) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="ensemble of 3"):
        CnnEnsemble(CnnArchitecture.from_config(replace(config, ensemble=3), input_rows=(ROWS,), n_classes=CLASSES), members)


def test_spec_augment_masks_bands_with_zeros() -> None:
    batch = torch.ones(4, ROWS, FRAMES)
    masked = spec_augment(batch, replace(CONFIG, freq_masks=1, time_masks=0, freq_mask_max_rows=3),
                          torch.Generator().manual_seed(0))
    assert masked.shape == batch.shape and torch.all(batch == 1)
    zero_rows = (masked == 0).all(dim=2)
    assert torch.all(zero_rows.sum(dim=1) <= 3)
    assert torch.equal((masked == 0).any(dim=2), zero_rows)  # a masked row is masked over all frames


def test_model_input_stacks_maps_and_names_bad_shapes() -> None:
    batch = {"log_mel": np.zeros((2, 8, 20)), "mfcc": np.ones((2, 3, 20))}
    stacked = model_input(batch, ("log_mel", "mfcc"))
    assert stacked.shape == (2, 11, 20) and stacked.dtype == np.float32
    with pytest.raises(UserError, match="needs feature"):
        model_input({"log_mel": batch["log_mel"]}, ("log_mel", "mfcc"))
    with pytest.raises(UserError, match="equal n and frames"):
        model_input({"log_mel": batch["log_mel"], "mfcc": np.ones((2, 3, 19))}, ("log_mel", "mfcc"))
    with pytest.raises(UserError, match="at least 16 frames"):
        model_input({"log_mel": np.zeros((2, 8, 10))}, ("log_mel",))


def test_with_several_corpora_every_corpus_and_class_weighs_the_same_in_the_loss() -> None:
    from training.fitting import balanced_class_weights
    from training.models.cnn import _EpochRunner

    features, labels = _data(24)
    corpora = np.array(["big"] * 18 + ["small"] * 6)

    def runner(train_corpora: np.ndarray | None) -> _EpochRunner:
        network = build_model(CONFIG, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=0)
        return _EpochRunner(network, network, features, labels, train_corpora, CONFIG, seed=0, rank=0, world_size=1,
                            device=torch.device("cpu"))

    weights = runner(corpora).row_weights.numpy()
    cells = [weights[(corpora == corpus) & (labels == label)].sum() for corpus in ("big", "small") for label in range(CLASSES)]
    np.testing.assert_allclose(cells, len(labels) / 6, rtol=1e-6)  # six cells, equal totals
    one_corpus = runner(None).row_weights.numpy()
    np.testing.assert_array_equal(one_corpus, balanced_class_weights(labels, CLASSES).numpy()[labels])  # classes alone

    trained = []
    for train_corpora in (None, corpora):
        network = build_model(CONFIG, input_rows=(ROWS,), n_classes=CLASSES, train_features=features, seed=0)
        train_model(network, features, labels, CONFIG, seed=0, train_corpora=train_corpora)
        trained.append(_weights(network))
    assert any(not np.allclose(a, b) for a, b in zip(*trained))  # the weighting reaches the loss


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(rank: int, world_size: int, port: int, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    function(*args)


def _two_process_runner(function: Callable[..., Any], *args: Any) -> None:
    """Starts the function like TorchDistributor(num_processes=2, local_mode=True) does: env + processes.

    Gloo's teardown on this torch build can abort a rank after ``destroy_process_group`` ("terminate
    called without an active exception", exit -6: seen once in about a dozen runs, with training
    done): a run whose processes die by a signal is started once more, and the second must succeed.
    """
    context = multiprocessing.get_context("spawn")
    for attempt in range(2):
        port = _free_port()
        processes = [context.Process(target=_launch, args=(rank, 2, port, function, args)) for rank in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        codes = [process.exitcode for process in processes]
        if attempt == 0 and any(code is not None and code < 0 for code in codes) and not any(code and code > 0 for code in codes):
            continue
        break
    assert codes == [0, 0]


@pytest.mark.slow
def test_ddp_training_in_two_processes_gives_a_usable_model() -> None:
    features, labels = _data()
    model, history = train_distributed(
        _two_process_runner, (features, labels), CONFIG, n_classes=CLASSES, input_rows=(ROWS,), seed=2,
        validation=_data(9, seed=1),
    )
    assert len(history.train_loss) == 2 and 1 <= history.best_epoch <= 2
    assert predict_proba(model, features).shape == (24, CLASSES)
    assert run_training_process.__module__ == "training.models.cnn_distributed"  # importable by the workers
