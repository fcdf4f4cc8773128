"""The pure, batched three-stage MTCNN detector.

``detect_faces`` takes the three networks and a list of RGB images and returns, per image, an
``N x 15`` array: box (x1, y1, x2, y2), confidence, then the 5 landmarks' x and 5 landmarks' y.
Every threshold and size is a call argument: a detector shared between users (Streamlit's
``st.cache_resource``) holds no per-call state.

The stages follow the ``mtcnn`` package (1.0.0) closely, because its results are our reference:
- the pyramid is made by *area* resampling (``tf.image.resize(method=AREA)``), done here exactly
  and separably as two banded weighted sums;
- PNet boxes take their regression at once (cell 12, stride 2) and are divided by the nominal
  scale; RNet/ONet patches are cut with ``tf.image.crop_and_resize`` semantics (bilinear, corner
  aligned on the box / image-size normalised coordinates, 0 outside the image);
- RNet/ONet regressions use widths of ``x2 - x1 + 1``; ONet's final NMS compares intersection
  over the *smaller* box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from .nets import ONet, PNet, RNet

# Patches per RNet/ONet forward: bounds memory on photos with thousands of proposals
# (48x48x3 float32 x 2048 = 57 MB) while keeping the forward large enough to be efficient.
PATCH_CHUNK = 2048
# PNet's receptive field: a pyramid level smaller than this yields nothing.
PNET_SIZE = 12


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings (the ``mtcnn`` package's defaults).

    Attributes:
        min_face_size: smallest face, in pixels, the pyramid looks for.
        scale_factor: ratio between pyramid levels.
        thresholds: face-probability thresholds of PNet, RNet and ONet.
        nms_thresholds: IoU thresholds: PNet within a scale, PNet across scales, RNet, ONet
            (the last one is intersection over the smaller box).
    """

    min_face_size: float = 20.0
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)

    def __post_init__(self) -> None:
        if not self.min_face_size >= 1:
            raise ValueError(f"min_face_size must be at least 1 pixel, got {self.min_face_size}")
        if not 0.1 <= self.scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0.1, 1), got {self.scale_factor}")
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {self.thresholds}")


def pyramid_scales(height: int, width: int, min_face_size: float, scale_factor: float) -> list[float]:
    """Scales of the image pyramid, as the ``mtcnn`` package computes them.

    The first scale maps a ``min_face_size`` face onto PNet's 12 pixels; levels whose shorter
    side would fall under 12 pixels are dropped (they cannot hold a PNet window).
    """
    min_dim = min(height, width)
    if min_dim < PNET_SIZE:
        return []
    count = int(round(-(np.log(min_dim / PNET_SIZE) / np.log(scale_factor) + 1)))
    first = PNET_SIZE / min_face_size
    scales = [first * scale_factor ** k for k in range(max(count, 0))]
    return [s for s in scales if int(min_dim * s) >= PNET_SIZE]


def _area_taps(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-resampling taps: output i = sum_k weight[k, i] * input[index[k, i]].

    Output i covers the input span [i * r, (i + 1) * r) with r = in / out; each input pixel
    counts by its overlap with that span, divided by r (TensorFlow's ``resize_area``).
    """
    ratio = in_size / out_size
    starts = np.arange(out_size) * ratio
    ends = starts + ratio
    index = np.floor(starts).astype(np.int64)[None, :] + np.arange(int(np.ceil(ratio)) + 1)[:, None]
    overlap = np.minimum(index + 1, ends[None, :]) - np.maximum(index, starts[None, :])
    weight = np.clip(overlap, 0.0, None) / ratio
    index = np.clip(index, 0, in_size - 1)
    return torch.from_numpy(index).to(device), torch.from_numpy(weight.astype(np.float32)).to(device)


def _area_by_taps(values: torch.Tensor, out_size: int) -> torch.Tensor:
    """Area-resample dim 2 of ``N x C x H x W`` by gathering whole rows (contiguous copies)."""
    index, weight = _area_taps(values.shape[2], out_size, values.device)
    result = values.index_select(2, index[0]) * weight[0][:, None]
    for k in range(1, len(index)):
        result.addcmul_(values.index_select(2, index[k]), weight[k][:, None])
    return result


class AreaPyramid:
    """Exact area resampling (TensorFlow's ``resize_area``) of a stack of uint8 images to any
    size, as the ``mtcnn`` package builds its image pyramid.

    Separable: rows, then columns, each a weighted sum of a few gathered whole rows. A level
    with ratio r reads about r + 2 input rows per output row, so every level costs about one
    pass over the photo whatever its scale (measured faster here than running sums, whose
    cumulative sum along a strided axis is slow in torch on the CPU).
    """

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels.float()  # N x C x H x W, 0..255

    def resize(self, out_h: int, out_w: int) -> torch.Tensor:
        """``N x C x out_h x out_w`` float32 pixel values (0..255)."""
        rows = _area_by_taps(self.pixels, out_h)
        columns = _area_by_taps(rows.transpose(2, 3).contiguous(), out_w)  # columns as rows
        return columns.transpose(2, 3)


def crop_and_resize(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut ``size x size`` patches of ``boxes`` from one ``C x H x W`` image.

    ``tf.image.crop_and_resize`` semantics as the ``mtcnn`` package uses them: box corners are
    divided by the image size, samples are spread corner to corner, bilinear inside the image
    and exactly 0 (mid-grey once normalised) outside it.
    """
    channels, height, width = image.shape
    if boxes.numel() == 0:
        return image.new_zeros((0, channels, size, size))
    steps = torch.linspace(0, 1, size, device=image.device, dtype=image.dtype)
    x1, y1, x2, y2 = (boxes[:, k:k + 1].to(image.dtype) for k in range(4))
    # grid_sample(align_corners=True) maps -1..1 to pixel centres 0..W-1, which turns TF's
    # "x1/W * (W-1) + j * (x2-x1)/W * (W-1)/(size-1)" into this simple form.
    gx = 2 * (x1 / width + steps[None, :] * (x2 - x1) / width) - 1
    gy = 2 * (y1 / height + steps[None, :] * (y2 - y1) / height) - 1
    count = boxes.shape[0]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    patches = F.grid_sample(image[None], grid.reshape(1, count * size, size, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)
    patches = patches.reshape(channels, count, size, size).permute(1, 0, 2, 3)
    inside = ((gx >= -1) & (gx <= 1))[:, None, None, :] & ((gy >= -1) & (gy <= 1))[:, None, :, None]
    return patches * inside


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (side = the longer side)."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(width, height)
    x1 = boxes[:, 0] + width * 0.5 - side * 0.5
    y1 = boxes[:, 1] + height * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * torch.stack([width, height, width, height], dim=1)


def _overlap(a: torch.Tensor, b: torch.Tensor, method: str) -> torch.Tensor:
    """Pairwise overlap of boxes ``a`` (n x 4) and ``b`` (m x 4): IoU, or over the smaller box."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    if method == "min":
        denominator = torch.minimum(area_a[:, None], area_b[None, :])
    else:
        denominator = area_a[:, None] + area_b[None, :] - inter
    return inter / denominator.clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, image_ids: torch.Tensor, threshold: float,
        method: str = "union") -> torch.Tensor:
    """Indices of the boxes kept, highest score first, per image.

    The ``mtcnn`` package's NMS is stricter than the greedy one: a box is dropped when *any*
    higher-scoring box overlaps it beyond ``threshold``, even one that was itself dropped. Its
    survivors are a subset of greedy NMS's, so we run ``torchvision.ops.batched_nms`` first and
    then check only its survivors against every higher-scoring box (k x n, not n x n).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if method == "union":
        candidates = batched_nms(boxes, scores, image_ids, threshold)
    else:  # torchvision has no intersection-over-minimum NMS; the strict check below suffices
        candidates = torch.argsort(scores, descending=True)
    order = torch.argsort(scores, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    kept = []
    for start in range(0, len(candidates), 512):  # bounds the k x n matrix
        chunk = candidates[start:start + 512]
        overlap = _overlap(boxes[chunk], boxes, method)
        higher = (rank[None, :] < rank[chunk, None]) & (image_ids[None, :] == image_ids[chunk, None])
        kept.append(chunk[~((overlap > threshold) & higher).any(dim=1)])
    return torch.cat(kept)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """MTCNN's input scaling: (pixel - 127.5) / 128."""
    return (pixels - 127.5) / 128.0


def _level_size(size: int, scale: float) -> int:
    return int(size * scale)


def _stage_pnet(pnet: PNet, images: list[torch.Tensor], config: DetectorConfig) -> list[torch.Tensor]:
    """Proposals per image: ``n x 5`` (x1, y1, x2, y2, score), squared, after NMS."""
    threshold = config.thresholds[0]
    per_image: list[list[torch.Tensor]] = [[] for _ in images]
    # Images of the same size share every pyramid level: one PNet forward per level per size.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[1:]), []).append(i)
    for (height, width), members in groups.items():
        pyramid = AreaPyramid(torch.stack([images[i] for i in members]))
        for scale in pyramid_scales(height, width, config.min_face_size, config.scale_factor):
            out_h, out_w = _level_size(height, scale), _level_size(width, scale)
            # channels-last halves the CPU time of these small convolutions (oneDNN's fast path)
            level = normalise(pyramid.resize(out_h, out_w)).contiguous(
                memory_format=torch.channels_last)
            offsets, probs = pnet(level)
            hit = probs > threshold
            if not hit.any():
                continue
            index, ys, xs = hit.nonzero(as_tuple=True)
            score = probs[index, ys, xs]
            reg = offsets[index, :, ys, xs]
            left, top = xs * 2 + 1, ys * 2 + 1
            boxes = torch.stack([left + reg[:, 0] * 11, top + reg[:, 1] * 11,
                                 left + 11 + reg[:, 2] * 11, top + 11 + reg[:, 3] * 11], dim=1) / scale
            keep = nms(boxes, score, index, config.nms_thresholds[0])
            for member_pos in index[keep].unique().tolist():
                sel = keep[index[keep] == member_pos]
                per_image[members[member_pos]].append(torch.cat([boxes[sel], score[sel, None]], dim=1))
    results = []
    for found in per_image:
        if not found:
            results.append(torch.zeros((0, 5), device=images[0].device if images else "cpu"))
            continue
        found_all = torch.cat(found)
        keep = nms(found_all[:, :4], found_all[:, 4],
                   torch.zeros(len(found_all), dtype=torch.int64, device=found_all.device),
                   config.nms_thresholds[1])
        found_all = found_all[keep]
        results.append(torch.cat([_square(found_all[:, :4]), found_all[:, 4:5]], dim=1))
    return results


def _patches(images: list[torch.Tensor], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
    patches = torch.cat([crop_and_resize(img, b[:, :4], size) for img, b in zip(images, boxes)])
    return patches.contiguous(memory_format=torch.channels_last)


def _chunked(net, patches: torch.Tensor):
    outputs = [net(patches[i:i + PATCH_CHUNK]) for i in range(0, len(patches), PATCH_CHUNK)]
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def _split(rows: torch.Tensor, image_ids: torch.Tensor, count: int) -> list[torch.Tensor]:
    return [rows[image_ids == i] for i in range(count)]


@torch.inference_mode()
def detect_faces(images: Sequence[np.ndarray], nets: tuple[PNet, RNet, ONet],
                 config: DetectorConfig = DetectorConfig(),
                 device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Run the three MTCNN stages on a batch of RGB images.

    Args:
        images: ``H x W x 3`` uint8 RGB arrays (sizes may differ).
        nets: (PNet, RNet, ONet) on ``device``.
        config: thresholds and pyramid settings.
        device: where to compute.

    Returns:
        One float64 array per image, ``n x 15``: x1, y1, x2, y2, confidence, 5 landmark x, 5
        landmark y (left eye, right eye, nose, mouth left, mouth right), in original pixels,
        boxes clipped to the image, sorted by confidence (highest first).
    """
    pnet, rnet, onet = nets
    count = len(images)
    if count == 0:
        return []
    pixels = [torch.from_numpy(np.require(img, requirements=("C", "W"))).to(device).permute(2, 0, 1)
              for img in images]
    boxes = _stage_pnet(pnet, pixels, config)
    tensors = [normalise(p.float()) for p in pixels]
    del pixels

    # RNet: every image's proposals in one (chunked) forward.
    ids = torch.cat([torch.full((len(b),), i, device=device) for i, b in enumerate(boxes)])
    if len(ids):
        offsets, scores = _chunked(rnet, _patches(tensors, boxes, 24))
        refined = _regress(torch.cat(boxes)[:, :4], offsets)
        keep = scores > config.thresholds[1]
        refined, scores, ids = refined[keep], scores[keep], ids[keep]
        keep = nms(refined, scores, ids, config.nms_thresholds[2])
        refined, scores, ids = _square(refined[keep]), scores[keep], ids[keep]
        boxes = _split(refined, ids, count)

    # ONet: boxes, landmarks and final scores.
    ids = torch.cat([torch.full((len(b),), i, device=device) for i, b in enumerate(boxes)])
    empty = np.zeros((0, 15), dtype=np.float64)
    if not len(ids):
        return [empty.copy() for _ in range(count)]
    input_boxes = torch.cat(boxes)[:, :4]
    offsets, landmarks, scores = _chunked(onet, _patches(tensors, boxes, 48))
    width = input_boxes[:, 2:3] - input_boxes[:, 0:1] + 1
    height = input_boxes[:, 3:4] - input_boxes[:, 1:2] + 1
    points_x = width * landmarks[:, :5] + input_boxes[:, 0:1] - 1
    points_y = height * landmarks[:, 5:] + input_boxes[:, 1:2] - 1
    final = _regress(input_boxes, offsets)
    keep = scores > config.thresholds[2]
    final, scores, ids = final[keep], scores[keep], ids[keep]
    points_x, points_y = points_x[keep], points_y[keep]
    keep = nms(final, scores, ids, config.nms_thresholds[3], method="min")
    rows = torch.cat([final[keep], scores[keep, None], points_x[keep], points_y[keep]], dim=1)
    ids = ids[keep]

    results = []
    for i, image in enumerate(images):
        mine = rows[ids == i].double().cpu().numpy()
        height_i, width_i = image.shape[:2]
        mine[:, [0, 2]] = np.clip(mine[:, [0, 2]], 0, width_i - 1)
        mine[:, [1, 3]] = np.clip(mine[:, [1, 3]], 0, height_i - 1)
        mine = mine[np.argsort(-mine[:, 4], kind="stable")]
        results.append(mine if len(mine) else empty.copy())
    return results
