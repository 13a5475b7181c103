"""CNN training in a DDP group (gloo, CPU), e.g. through Spark's ``TorchDistributor``.

The train job passes a runner such as::

    from pyspark.ml.torch.distributor import TorchDistributor
    runner = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run

:func:`train_distributed` writes the arrays to a temporary directory as ``.npy`` (no pickle),
calls ``runner(run_training_process, data_dir, settings_json)``, and reads back the weights
(safetensors) and the history (JSON) that rank 0 wrote. Each process of the group runs
:func:`run_training_process`, which reads ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
from the environment that ``TorchDistributor`` (like ``torchrun``) sets. The temporary
directory must be visible to every process: true in local mode.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ser_udfs.settings import from_dict, to_dict
from training.fitting import TrainingHistory
from training.models.cnn import CnnConfig, EmotionCnn, build_model, train_model

logger = logging.getLogger(__name__)

DistributedRunner = Callable[..., Any]
SETTINGS_FILE = "settings.json"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"


def train_distributed(
    runner: DistributedRunner,
    train: tuple[np.ndarray, np.ndarray],
    config: CnnConfig,
    *,
    n_classes: int,
    input_rows: tuple[int, ...],
    seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
    log_prefix: str = "",
    train_corpora: np.ndarray | None = None,
) -> tuple[EmotionCnn, TrainingHistory]:
    """Train a CNN through ``runner`` (a DDP launcher) and return rank 0's model and history.

    Parameters
    ----------
    runner
        Called as ``runner(run_training_process, data_dir, settings_json)``; e.g.
        ``TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run``.
    train
        ``(features [n, rows, frames], labels [n])``.
    validation, epochs, seed, log_prefix, train_corpora
        As for :func:`training.models.cnn.train_model`.
    """
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="ser-ddp-") as data_dir:
        folder = Path(data_dir)
        np.save(folder / "train_features.npy", np.ascontiguousarray(train[0], dtype=np.float32), allow_pickle=False)
        np.save(folder / "train_labels.npy", np.asarray(train[1], dtype=np.int64), allow_pickle=False)
        if train_corpora is not None:
            np.save(folder / "train_corpora.npy", np.asarray(train_corpora).astype(str), allow_pickle=False)
        if validation is not None:
            np.save(folder / "validation_features.npy", np.ascontiguousarray(validation[0], dtype=np.float32), allow_pickle=False)
            np.save(folder / "validation_labels.npy", np.asarray(validation[1], dtype=np.int64), allow_pickle=False)
        settings = {
            "config": to_dict(config),
            "n_classes": n_classes,
            "input_rows": list(input_rows),
            "seed": seed,
            "epochs": epochs,
            "log_prefix": log_prefix,
        }
        runner(run_training_process, data_dir, json.dumps(settings))
        model = build_model(config, input_rows=input_rows, n_classes=n_classes, train_features=train[0], seed=seed)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        history = TrainingHistory.from_dict(json.loads((folder / HISTORY_FILE).read_text()))
    return model, history


def run_training_process(data_dir: str, settings_json: str) -> dict[str, Any] | None:
    """The function every process of the DDP group runs (importable, so spawn can find it).

    Parameters
    ----------
    data_dir
        Directory with ``train_features.npy`` ``[n, rows, frames]``, ``train_labels.npy``
        ``[n]`` and optionally ``train_corpora.npy`` ``[n]`` and ``validation_*.npy``; rank 0 writes ``model.safetensors`` and
        ``history.json`` there.
    settings_json
        JSON of ``config`` (:class:`CnnConfig` dict), ``n_classes``, ``input_rows``, ``seed``,
        ``epochs``, ``log_prefix``.

    Returns
    -------
    dict or None
        Rank 0 returns the training history dict, other ranks ``None``.
    """
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = json.loads(settings_json)
    config = from_dict(CnnConfig, settings["config"])
    torch.set_num_threads(config.torch_threads or 1)
    folder = Path(data_dir)
    dist.init_process_group("gloo")
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        train_features = np.load(folder / "train_features.npy", allow_pickle=False)
        train_labels = np.load(folder / "train_labels.npy", allow_pickle=False)
        corpora_file = folder / "train_corpora.npy"
        train_corpora = np.load(corpora_file, allow_pickle=False) if corpora_file.exists() else None
        validation = None
        if (folder / "validation_features.npy").exists():
            validation = (
                np.load(folder / "validation_features.npy", allow_pickle=False),
                np.load(folder / "validation_labels.npy", allow_pickle=False),
            )
        model = build_model(
            config,
            input_rows=tuple(settings["input_rows"]),
            n_classes=settings["n_classes"],
            train_features=train_features,
            seed=settings["seed"],
        )
        history = train_model(
            DistributedDataParallel(model),
            train_features,
            train_labels,
            config,
            seed=settings["seed"],
            validation=validation,
            epochs=settings["epochs"],
            rank=rank,
            world_size=world_size,
            log_prefix=f"{settings['log_prefix']}[rank {rank}/{world_size}, pid {os.getpid()}] ",
            train_corpora=train_corpora,
        )
        if rank == 0:
            save_file({name: t.detach().contiguous() for name, t in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
            (folder / HISTORY_FILE).write_text(json.dumps(history.to_dict()))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return history.to_dict() if rank == 0 else None
