"""Choosing the compute device once, so the same code runs on CPU and GPU."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Return the device named in the config; `auto` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config asks for device '{name}' but CUDA is not available; set device: auto or cpu")
    return device


def configure_torch(threads: int, device: torch.device) -> None:
    """Set the intra-op thread count from the job's threads; ask for deterministic CUDA kernels on a GPU."""
    torch.set_num_threads(max(1, int(threads)))
    if device.type == "cuda":
        # CPU kernels used here are deterministic already; the switch costs seconds of imports, so only on CUDA.
        # warn_only: a few CUDA kernels have no deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)
