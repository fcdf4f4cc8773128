"""Device choice and description: one place that decides CPU vs. CUDA and the AMP dtype."""
from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(choice: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` / ``cuda:N`` must exist; ``cpu``.

    Raises:
        ValueError: an unknown choice, or CUDA asked for on a machine without it.
    """
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available here; "
                             "use --device cpu or auto")
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{choice}: only {torch.cuda.device_count()} GPU(s) here")
        return device
    raise ValueError(f"invalid device {choice!r}; valid: {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def cpu_count() -> int:
    """CPUs this process may use (respects affinity/cgroup pinning), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def describe_device(device: torch.device | str | None = None) -> str:
    """Human label: ``"CPU (2 cores)"`` or ``"NVIDIA A100-SXM4-40GB (40 GB)"``."""
    device = torch.device(device) if device is not None else select_device("auto")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GB)"
    n = cpu_count()
    return f"CPU ({n} core{'s' if n != 1 else ''})"


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on GPUs that support it (no loss scaling needed), else fp16;
    None on CPU (CPU autocast is slower than fp32 for these convnets on small machines)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
