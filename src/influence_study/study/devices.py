"""The device a step computes on and its mixed precision (torch); the Snakefile reads :func:`gpu_jobs`."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def gpu_jobs(config) -> int:
    """The ``gpu`` resource a job on the model's device declares: 1 when the config's device is (or, for
    ``auto``, resolves here to) CUDA, else 0. With ``--resources gpu=1`` a local run serialises those jobs."""
    device = config["device"]
    if device != "auto":
        return int(device == "cuda")
    return int(torch.cuda.is_available())


def autocast(dtype: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Mixed precision for the config's ``dtype``: ``bfloat16`` runs matrix products in bf16 (weights and
    optimiser state stay float32); ``float32`` changes nothing."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
