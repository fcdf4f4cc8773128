"""Drawing detections on photos, for the pages and for anyone who wants to look at results.

Kept in core (no Streamlit) so that the drawing is tested without a browser and reused by the
command lines and later pages (Predict, Evaluate).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Box and label colour, and one colour per landmark in the detector's order: left_eye,
# right_eye, nose, mouth_left, mouth_right (eyes blue, nose yellow, mouth red: easy to tell
# a left/right swap at a glance).
BOX_COLOUR = (0, 230, 118)
LABEL_TEXT_COLOUR = (0, 0, 0)
KEYPOINT_COLOURS = ((41, 121, 255), (0, 229, 255), (255, 234, 0), (255, 23, 68), (255, 109, 0))


def _field(face: Any, name: str) -> Any:
    """Read ``box``/``confidence``/``keypoints`` from a Face or its ``to_dict()`` form."""
    if isinstance(face, Mapping):
        return face.get(name)
    return getattr(face, name, None)


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        # Pillow >= 10.1 ships a scalable default font; older ones only the tiny bitmap one.
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def default_labels(faces: Sequence[Any]) -> list[str]:
    """``"1: 0.998"``-style labels: the face's number (as in the crops list) and confidence."""
    labels = []
    for index, face in enumerate(faces, start=1):
        confidence = _field(face, "confidence")
        labels.append(f"{index}: {confidence:.3f}" if confidence is not None else str(index))
    return labels


def draw_faces(image: np.ndarray, faces: Sequence[Any],
               labels: Sequence[str | None] | None = None) -> np.ndarray:
    """Draw each face's box, its 5 landmarks and a label on a copy of ``image``.

    Args:
        image: HxWx3 uint8 RGB array (as returned by ``core.images.load_image``).
        faces: ``core.detection.Face`` objects or their ``to_dict()`` dicts (as stored in the
            crop cache): ``box`` (x1, y1, x2, y2), ``confidence``, ``keypoints`` (5 (x, y)).
        labels: one text per face (``None`` or ``""`` for no label); by default the face's
            number and confidence, as from :func:`default_labels`.

    Returns:
        A new HxWx3 uint8 RGB array; ``image`` is not modified.
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"draw_faces expects an HxWx3 uint8 RGB array, got shape {array.shape} "
                         f"dtype {array.dtype}; load images with core.images.load_image")
    if labels is None:
        labels = default_labels(faces)
    elif len(labels) != len(faces):
        raise ValueError(f"got {len(labels)} labels for {len(faces)} faces")

    canvas = Image.fromarray(array).copy()
    draw = ImageDraw.Draw(canvas)
    height, width = array.shape[:2]
    # Scale strokes and text with the photo so that they stay visible on a 4000 px photo and do
    # not swamp a 300 px one once the page shrinks it to the column width (~700 px).
    longest = max(height, width)
    line = max(2, round(longest / 300))
    radius = max(3, round(longest / 200))
    font = label_font(max(12, round(longest / 40)))

    for face, label in zip(faces, labels):
        x1, y1, x2, y2 = (float(v) for v in _field(face, "box"))
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=line)
        for (x, y), colour in zip(_field(face, "keypoints") or (), KEYPOINT_COLOURS):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour,
                         outline=(0, 0, 0))
        if label:
            left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
            text_w, text_h = right - left, bottom - top
            pad = max(1, line)
            # Above the box when there is room, otherwise just inside its top edge.
            ty = y1 - text_h - 2 * pad if y1 - text_h - 2 * pad >= 0 else y1
            tx = min(max(0.0, x1), max(0.0, width - text_w - 2 * pad))
            draw.rectangle((tx, ty, tx + text_w + 2 * pad, ty + text_h + 2 * pad),
                           fill=BOX_COLOUR)
            draw.text((tx + pad - left, ty + pad - top), label, fill=LABEL_TEXT_COLOUR, font=font)
    return np.asarray(canvas)


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` (keeping its aspect ratio) so its longest side is at most ``max_side``.

    For display only: a page never needs a 6000 px photo, and sending one to the browser on every
    rerun is slow. Smaller images are returned unchanged.
    """
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
