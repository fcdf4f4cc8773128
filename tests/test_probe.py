"""core.probe: perturbations of a real aligned face crop, and sweeps through real models."""
from __future__ import annotations

import numpy as np
import pytest

from core import probe


@pytest.fixture(scope="module")
def face_crop(astronaut):
    """The astronaut's face, aligned as the crop cache cuts it (160 px, margin 0.1)."""
    from core.cache import CropSettings
    from core.detection import get_detector, select_primary
    from core.predict import crop_faces

    settings = CropSettings()
    face = select_primary(get_detector("cpu").detect([astronaut])[0])
    assert face is not None
    return crop_faces(astronaut, [face], settings)[0]


@pytest.mark.parametrize("kind", sorted(probe.PERTURBATIONS))
def test_identity_value_leaves_the_crop_unchanged(face_crop, kind):
    spec = probe.PERTURBATIONS[kind]
    out = probe.apply(face_crop, kind, spec.identity)
    assert out.shape == face_crop.shape and out.dtype == np.uint8
    # JPEG at quality 100 is not lossless; everything else is exact.
    tolerance = 6 if kind == "jpeg" else 0
    assert np.abs(out.astype(int) - face_crop.astype(int)).mean() <= tolerance
    assert out is not face_crop  # never the caller's array
    assert out.flags.writeable  # torch.from_numpy warns on read-only arrays (PIL's asarray)


@pytest.mark.parametrize("kind", sorted(probe.PERTURBATIONS))
def test_far_end_of_the_range_changes_the_crop(face_crop, kind):
    spec = probe.PERTURBATIONS[kind]
    far = spec.high if abs(spec.high - spec.identity) >= abs(spec.low - spec.identity) else spec.low
    out = probe.apply(face_crop, kind, far)
    assert out.shape == face_crop.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - face_crop.astype(int)).mean() > 3, kind


def test_perturbations_move_the_pixels_the_right_way(face_crop):
    dark, bright = probe.brightness(face_crop, 0.5), probe.brightness(face_crop, 1.5)
    assert dark.mean() < face_crop.mean() < bright.mean()
    # Blur and lost resolution remove high frequencies: smaller mean gradient.
    def sharpness(img):
        return np.abs(np.diff(img.astype(float), axis=1)).mean()
    assert sharpness(probe.blur(face_crop, 3)) < 0.6 * sharpness(face_crop)
    assert sharpness(probe.scale(face_crop, 0.2)) < 0.6 * sharpness(face_crop)
    assert probe.jpeg(face_crop, 5).shape == face_crop.shape


@pytest.mark.parametrize("region", probe.REGIONS)
def test_occlusion_covers_its_region(face_crop, region):
    out = probe.occlude(face_crop, 0.3, region=region, margin=0.1, seed=3)
    x, y = probe.region_centre(region, face_crop.shape[1], margin=0.1, seed=3)
    assert (out[int(y), int(x)] == 128).all()
    changed = (out != face_crop).any(axis=2)
    assert 0 < changed.mean() < 0.2  # a patch, not the whole face
    if region == "eyes":
        assert y < face_crop.shape[0] / 2
    if region == "mouth":
        assert y > face_crop.shape[0] / 2


def test_bad_arguments_name_the_choices(face_crop):
    with pytest.raises(ValueError, match="rotation"):
        probe.apply(face_crop, "sepia", 1.0)
    with pytest.raises(ValueError, match="eyes, mouth, random"):
        probe.occlude(face_crop, 0.3, region="nose")
    with pytest.raises(ValueError, match="uint8"):
        probe.blur(face_crop.astype(np.float32), 1.0)


def test_sweep_rows_with_a_transparent_scorer(face_crop):
    """A scorer whose answer is the crop's brightness: the sweep must report it value by value."""
    def score(crops):
        mean = crops.reshape(len(crops), -1).mean(axis=1) / 255.0
        return ("bright", "dark"), np.stack([mean, 1 - mean], axis=1)

    values = [0.2, 1.0, 2.0]
    rows = probe.sweep(face_crop, "brightness", score, values=values)
    assert [r["value"] for r in rows] == values
    assert [r["identity"] for r in rows] == [False, True, False]
    base = face_crop.mean() / 255.0
    ref = "bright" if base >= 0.5 else "dark"
    assert all(r["ref_label"] == ref for r in rows)
    assert rows[1]["ref_prob"] == pytest.approx(max(base, 1 - base), abs=1e-6)
    assert rows[0]["label"] == "dark" and rows[2]["label"] == "bright"
    assert rows[0]["prob"] > 0.5 and rows[2]["prob"] > 0.5


def test_sweep_values_include_the_identity():
    for kind, spec in probe.PERTURBATIONS.items():
        values = probe.sweep_values(kind, steps=5)
        assert spec.identity in values and values == sorted(values)
        assert values[0] == pytest.approx(spec.low) and values[-1] == pytest.approx(spec.high)


def test_sweep_with_the_reference_gender_model(face_crop):
    """A real model: blurring the astronaut's face away lowers the original answer's probability."""
    from core.runs import load_model

    model = load_model("reference:gender")
    rows = probe.sweep(face_crop, "blur", probe.scorer_for(model), values=[0.0, 6.0])
    assert [r["value"] for r in rows] == [0.0, 6.0]
    assert rows[0]["ref_label"] in ("female", "male")
    assert rows[0]["label"] == rows[0]["ref_label"]
    direct = model.predict_proba(face_crop[None])[0].max()
    assert rows[0]["ref_prob"] == pytest.approx(float(direct), abs=1e-4)
    assert all(0.0 <= r["prob"] <= 1.0 for r in rows)


def test_sweep_with_a_gallery(face_crop):
    """A gallery scores similarity: the enrolled face itself scores ~1 and drops under occlusion."""
    from core.gallery import Gallery, get_embedder

    embedding = get_embedder("dlib_face", margin=0.1)(face_crop[None])
    other = get_embedder("dlib_face", margin=0.1)(np.ascontiguousarray(face_crop[:, ::-1])[None])
    gallery = Gallery().add("astronaut", embedding).add("mirror", other)
    rows = probe.sweep(face_crop, "occlusion", probe.scorer_for(gallery), values=[0.0, 0.6],
                       region="eyes")
    assert rows[0]["ref_label"] == "astronaut" and rows[0]["prob"] == pytest.approx(1.0, abs=1e-3)
    assert rows[1]["ref_prob"] < rows[0]["ref_prob"]
