"""Face crops: 5-point similarity alignment, plain box crops, and the whole-image fallback."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# The common 112 x 112 five-point template (ArcFace / InsightFace): left eye, right eye, nose,
# mouth left, mouth right, in the same order as MTCNN's keypoints.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``source`` onto ``target``.

    Umeyama's closed form; returns a 2 x 3 matrix ``M`` with ``target ~ M @ [x, y, 1]``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    centred_s, centred_t = source - mean_s, target - mean_t
    covariance = centred_t.T @ centred_s / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # a reflection would mirror the face: forbid it
    rotation = u @ np.diag(sign) @ vt
    variance = centred_s.var(axis=0).sum()
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    shift = mean_t - scale * rotation @ mean_s
    return np.hstack([scale * rotation, shift[:, None]])


def aligned_template(size: int, margin: float) -> np.ndarray:
    """The 112 template scaled into a ``size`` square, with ``margin`` of the face on each side."""
    if size < 8:
        raise ValueError(f"crop size must be at least 8 pixels, got {size}")
    if not 0 <= margin < 2:
        raise ValueError(f"margin must be in [0, 2), got {margin}")
    scale = size / (112.0 * (1 + 2 * margin))
    return (TEMPLATE_112 + 112.0 * margin) * scale


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Apply a 2 x 3 forward affine ``matrix`` (image -> crop) with bilinear sampling."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    # PIL's AFFINE takes the inverse map (crop -> image) in continuous coordinates, where pixel
    # i's centre is at i + 0.5; landmarks are in index coordinates (centre at i): shift both.
    pil = Image.fromarray(image)
    shifted = inverse.copy()
    shifted[:, 2] = inverse[:, 2] + 0.5 - 0.5 * (inverse[:, 0] + inverse[:, 1])
    warped = pil.transform((size, size), Image.Transform.AFFINE, data=tuple(shifted.reshape(-1)),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.array(warped, dtype=np.uint8)


def align_face(image: np.ndarray, keypoints: Sequence[Sequence[float]], *, size: int = 112,
               margin: float = 0.0) -> np.ndarray:
    """An aligned ``size x size`` face crop from the 5 MTCNN landmarks.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        keypoints: 5 (x, y) points: left eye, right eye, nose, mouth left, mouth right.
        size: output side in pixels.
        margin: extra room around the 112 template's face, as a fraction of it on each side
            (0 gives the tight recognition crop; 0.25 shows the whole head).
    """
    points = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    matrix = similarity_transform(points, aligned_template(size, margin))
    return warp_affine(image, matrix, size)


def crop_box(image: np.ndarray, box: Sequence[float], *, margin: float = 0.2,
             size: int | None = None) -> np.ndarray:
    """A square crop around ``box`` (x1, y1, x2, y2) grown by ``margin`` of its side.

    Parts outside the photo are filled black; ``size`` resizes the result.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_px = max(int(round(side)), 1)
    canvas = np.zeros((side_px, side_px, 3), dtype=np.uint8)
    height, width = image.shape[:2]
    sx1, sy1 = max(left, 0), max(top, 0)
    sx2, sy2 = min(left + side_px, width), min(top + side_px, height)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - top:sy2 - top, sx1 - left:sx2 - left] = image[sy1:sy2, sx1:sx2]
    if size is not None and size != side_px:
        canvas = np.array(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))
    return canvas


def fallback_crop(image: np.ndarray, *, size: int) -> np.ndarray:
    """The whole photo as the face: its centre square, resized.

    The rule for photos that are already tight face crops (common in celebrity datasets), where
    MTCNN often finds no face because the face fills the frame.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    return np.array(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))


def resize_batch(crops: np.ndarray, size: int) -> torch.Tensor:
    """``N x H x W x 3`` uint8 crops -> ``N x 3 x size x size`` float tensor in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
    return tensor
