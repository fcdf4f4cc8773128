"""Batched preprocessing and augmentation on the training device: no Python per image.

``core.data.build_transforms`` is the per-sample (DataLoader worker) form of the same recipe;
this is the batched form the training loop uses by default, so a GPU never waits on a CPU worker
and a 2-core CPU spends its time in the model, not in per-image Python. Each sample draws its
own parameters (one ``affine_grid``/``grid_sample`` for the whole batch).

Recipe (as ``build_transforms``, i.e. the notebooks' Keras ImageDataGenerator): horizontal flip,
rotation +-15 deg, shift +-10 %, shear +-10 deg, zoom 0.9-1.1, brightness/contrast/saturation
+-20 %. Preprocessing shared by training, validation and :class:`core.predictor.Predictor`:
:func:`resize_uint8` (antialiased bilinear, rounded back to uint8) then :func:`normalize`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

ROTATION_DEG = 15.0
SHIFT = 0.1
SHEAR_DEG = 10.0
ZOOM = (0.9, 1.1)
JITTER = 0.2


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 256) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size); antialiased bilinear, in chunks."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=images.device)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float (N, 3, H, W) -> float32 normalised with ``mean``/``std``."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flip + affine + colour jitter, drawn per sample.

    Args:
        images: float (N, 3, H, W) in [0, 1] (on any device).
        generator: a generator on the images' device (seeded by the loop for reproducibility).

    Returns:
        float (N, 3, H, W) in [0, 1].
    """
    n, device = len(images), images.device
    angle = _uniform(n, -ROTATION_DEG, ROTATION_DEG, generator, device) * (math.pi / 180)
    shear = _uniform(n, -SHEAR_DEG, SHEAR_DEG, generator, device) * (math.pi / 180)
    zoom = _uniform(n, ZOOM[0], ZOOM[1], generator, device)
    shift = _uniform(2 * n, -SHIFT, SHIFT, generator, device).view(n, 2) * 2  # [-1,1] coords
    flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    # affine_grid maps output to input coordinates; the parameter distributions are symmetric,
    # so drawing the inverse transform directly is the same augmentation.
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.zeros((n, 2, 3), device=device, dtype=images.dtype)
    theta[:, 0, 0] = cos * flip / zoom
    theta[:, 0, 1] = (-sin + cos * tan) / zoom
    theta[:, 1, 0] = sin * flip / zoom
    theta[:, 1, 1] = (cos + sin * tan) / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # "border" repeats edge pixels, like Keras' fill_mode="nearest" in the notebooks.
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    shape = (n, 1, 1, 1)
    brightness = _uniform(n, 1 - JITTER, 1 + JITTER, generator, device).view(shape)
    contrast = _uniform(n, 1 - JITTER, 1 + JITTER, generator, device).view(shape)
    saturation = _uniform(n, 1 - JITTER, 1 + JITTER, generator, device).view(shape)
    out = out * brightness
    gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
    gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = gray + (out - gray) * saturation
    return out.clamp_(0.0, 1.0)
