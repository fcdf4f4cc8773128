"""Behaviour probe: perturb a face crop and watch how a model's answer moves.

Pure functions on uint8 (H, W, 3) RGB crops (as ``core.predict.crop_faces`` cuts them), plus a
sweep that applies one perturbation over a range of values and scores every variant in one batch:

    from core.probe import PERTURBATIONS, sweep, scorer_for
    rows = sweep(crop, "blur", scorer_for(predictor), margin=0.1)
    # [{"value": 0.0, "label": "madonna", "prob": 0.93, "ref_prob": 0.93}, ...]

The Predict page plots the rows; ``python -m core.probe PHOTO --run RUN --kind blur`` prints them.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

Scorer = Callable[[np.ndarray], tuple[Sequence[str], np.ndarray]]
REGIONS = ("eyes", "mouth", "random")


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """One kind of change: its range, the value that leaves the crop unchanged, and a unit."""

    name: str
    low: float
    high: float
    identity: float
    step: float
    unit: str
    help: str


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("rotation", -90.0, 90.0, 0.0, 5.0, "degrees", "in-plane rotation about the centre"),
    Perturbation("brightness", 0.1, 2.5, 1.0, 0.05, "x", "pixel values multiplied by this factor"),
    Perturbation("blur", 0.0, 8.0, 0.0, 0.25, "px", "Gaussian blur radius"),
    Perturbation("jpeg", 2.0, 100.0, 100.0, 1.0, "quality", "JPEG compression quality"),
    # Resolution, not zoom: the face is shrunk to this fraction and blown back up, as a face
    # that was this much smaller in the photo would look to the model.
    Perturbation("scale", 0.05, 1.0, 1.0, 0.05, "x", "resolution: shrink to this fraction, then "
                 "enlarge back"),
    Perturbation("occlusion", 0.0, 0.8, 0.0, 0.05, "of width", "grey patch over a face region, "
                 "side as a fraction of the crop"),
)}


def _check(crop: Any) -> np.ndarray:
    array = np.asarray(crop)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"a probe needs an (H, W, 3) uint8 RGB crop, got {array.dtype} {array.shape}")
    return array


def rotate(crop: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise about the centre; the corners are filled with the edge colour
    average (black corners would be a cue of their own)."""
    crop = _check(crop)
    fill = tuple(int(v) for v in np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]).mean(0))
    return np.array(Image.fromarray(crop).rotate(float(degrees), resample=Image.Resampling.BILINEAR,
                                                   fillcolor=fill))


def brightness(crop: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every pixel by ``factor`` (clipped to 0..255)."""
    crop = _check(crop)
    return np.clip(crop.astype(np.float32) * float(factor), 0, 255).round().astype(np.uint8)


def blur(crop: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur with ``radius`` pixels (0: unchanged)."""
    crop = _check(crop)
    if radius <= 0:
        return crop.copy()
    return np.array(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(float(radius))))


def jpeg(crop: np.ndarray, quality: float) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (1..100)."""
    crop = _check(crop)
    quality = int(round(min(max(quality, 1), 100)))
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.array(Image.open(buffer).convert("RGB"))


def scale(crop: np.ndarray, factor: float) -> np.ndarray:
    """Shrink to ``factor`` of the side (at least 2 px) and enlarge back: lost resolution."""
    crop = _check(crop)
    if factor >= 1:
        return crop.copy()
    h, w = crop.shape[:2]
    small = Image.fromarray(crop).resize((max(2, round(w * factor)), max(2, round(h * factor))),
                                         Image.Resampling.BILINEAR)
    return np.array(small.resize((w, h), Image.Resampling.BILINEAR))


def region_centre(region: str, size: int, *, margin: float = 0.1, seed: int = 0) -> tuple[float, float]:
    """Where ``region`` sits in an aligned crop of side ``size`` cut with ``margin``.

    Eyes and mouth come from the ArcFace 112 template the crops are aligned to
    (``core.detection.align``); "random" is a seeded point in the crop's central half.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown occlusion region {region!r}; choose one of {', '.join(REGIONS)}")
    if region == "random":
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(0.25, 0.75, size=2) * size
        return float(x), float(y)
    from core.detection.align import aligned_template

    points = aligned_template(size, margin)  # left eye, right eye, nose, mouth left, mouth right
    chosen = points[:2] if region == "eyes" else points[3:]
    x, y = chosen.mean(axis=0)
    return float(x), float(y)


def occlude(crop: np.ndarray, fraction: float, *, region: str = "eyes", margin: float = 0.1,
            seed: int = 0) -> np.ndarray:
    """Cover ``region`` with a mid-grey patch; eyes get a bar (wide, 40% as tall), mouth and
    random a square. ``fraction`` is the patch width as a fraction of the crop's width."""
    crop = _check(crop)
    out = crop.copy()
    if fraction <= 0:
        return out
    h, w = crop.shape[:2]
    cx, cy = region_centre(region, w, margin=margin, seed=seed)
    half_w = fraction * w / 2
    half_h = half_w * (0.4 if region == "eyes" else 1.0)
    x1, x2 = int(max(0, round(cx - half_w))), int(min(w, round(cx + half_w)))
    y1, y2 = int(max(0, round(cy - half_h))), int(min(h, round(cy + half_h)))
    out[y1:y2, x1:x2] = 128
    return out


def apply(crop: np.ndarray, kind: str, value: float, *, region: str = "eyes", margin: float = 0.1,
          seed: int = 0) -> np.ndarray:
    """Apply perturbation ``kind`` (see :data:`PERTURBATIONS`) with ``value`` to ``crop``."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")
    if kind == "rotation":
        return rotate(crop, value)
    if kind == "brightness":
        return brightness(crop, value)
    if kind == "blur":
        return blur(crop, value)
    if kind == "jpeg":
        return jpeg(crop, value)
    if kind == "scale":
        return scale(crop, value)
    return occlude(crop, value, region=region, margin=margin, seed=seed)


def sweep_values(kind: str, steps: int = 13) -> list[float]:
    """``steps`` evenly spaced values over the range of ``kind``, with its identity value."""
    p = PERTURBATIONS[kind]
    values = set(np.round(np.linspace(p.low, p.high, max(2, steps)), 4).tolist()) | {p.identity}
    return sorted(float(v) for v in values)


def scorer_for(predictor: Any) -> Scorer:
    """``crops -> (class names, scores (N, C))`` for a loaded run or a gallery.

    Runs give class probabilities (``predict_proba``); a gallery gives the cosine similarity to
    each person (its embedder applied to the crops first).
    """
    from core.gallery import Gallery, get_embedder

    if isinstance(predictor, Gallery):
        from core.predict import crop_settings_of

        embed = get_embedder(predictor.embedder, margin=crop_settings_of(predictor).margin)
        return lambda crops: (predictor.names, predictor.scores(embed(crops)))
    return lambda crops: (predictor.classes, np.asarray(predictor.predict_proba(crops)))


def sweep(crop: np.ndarray, kind: str, score: Scorer, *, values: Sequence[float] | None = None,
          region: str = "eyes", margin: float = 0.1, seed: int = 0) -> list[dict[str, Any]]:
    """Score ``crop`` under ``kind`` at each value (one batch).

    Args:
        crop: (H, W, 3) uint8 aligned face crop.
        kind: a key of :data:`PERTURBATIONS`.
        score: ``crops -> (names, scores (N, C))``, e.g. :func:`scorer_for`.
        values: the values to try (default :func:`sweep_values`).
        region, margin, seed: for occlusion (see :func:`occlude`).

    Returns:
        One row per value: ``{"value", "label" (top label), "prob" (its score), "ref_label"
        (the top label of the unchanged crop), "ref_prob" (that label's score)}``.
    """
    crop = _check(crop)
    values = list(sweep_values(kind) if values is None else values)
    if not values:
        raise ValueError("a sweep needs at least one value")
    identity = PERTURBATIONS[kind].identity if kind in PERTURBATIONS else None
    batch = np.stack([crop] + [apply(crop, kind, v, region=region, margin=margin, seed=seed)
                               for v in values])
    names, scores = score(batch)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(batch), len(names)):
        raise ValueError(f"scorer returned shape {scores.shape} for {len(batch)} crops and "
                         f"{len(names)} classes")
    ref = int(scores[0].argmax())
    rows = []
    for value, row in zip(values, scores[1:]):
        top = int(row.argmax())
        rows.append({"value": float(value), "label": str(names[top]), "prob": round(float(row[top]), 6),
                     "ref_label": str(names[ref]), "ref_prob": round(float(row[ref]), 6),
                     "identity": bool(identity is not None and np.isclose(value, identity))})
    return rows


# -- command line ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.probe",
                                     description="Sweep one perturbation over the main face of a "
                                                 "photo and print (value, top label, probability).")
    parser.add_argument("photo")
    parser.add_argument("--run", required=True, help="run folder, reference:gender or gallery .npz")
    parser.add_argument("--kind", default="blur", choices=sorted(PERTURBATIONS))
    parser.add_argument("--region", default="eyes", choices=REGIONS)
    parser.add_argument("--steps", type=int, default=13)
    args = parser.parse_args(argv)
    from core.detection import get_detector, select_primary
    from core.images import ImageError, load_image
    from core.predict import crop_faces, crop_settings_of, load_predictor, whole_image_crop

    try:
        image = load_image(args.photo)
        predictor = load_predictor(args.run)
    except (ImageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    settings = crop_settings_of(predictor)
    face = select_primary(get_detector().detect([image], settings.detector_config())[0])
    crop = (crop_faces(image, [face], settings) if face else whole_image_crop(image, settings))[0]
    for row in sweep(crop, args.kind, scorer_for(predictor), values=sweep_values(args.kind, args.steps),
                     region=args.region, margin=settings.margin):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
