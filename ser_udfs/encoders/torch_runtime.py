"""Torch runtime helpers of the encoder code: device and precision choices, autocast, host → device copies.

Torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

import numpy as np

from ser_udfs.errors import UserError

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]


def to_device(array: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """``array`` as a tensor on ``device``; to a GPU through pinned memory, without waiting for it.

    The copy joins the GPU's queue, so the host goes on preparing the next batch while the GPU
    works: the input code and the model overlap.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def resolve_device(choice: str) -> "torch.device":
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is refused."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no GPU; use device 'auto' or 'cpu'")
    if choice not in ("cpu", "cuda"):
        raise UserError(f"unknown device {choice!r}; use auto, cpu or cuda")
    return torch.device(choice)


def resolve_precision(choice: str, device: "torch.device") -> str:
    """``auto`` → ``bf16`` on a GPU that supports it (else ``fp16``), ``fp32`` on the CPU."""
    import torch

    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: "torch.device", precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` (``fp32``: none)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
