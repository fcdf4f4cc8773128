"""Grad-CAM (core.gradcam) on a run trained here and a real face; the target layer of every CNN
family; and a clear refusal for models it cannot explain."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from core.gradcam import (GradCamUnavailable, TARGET_LAYERS, gradcam, gradcam_available,
                          target_layer)
from tests.conftest import ROOT, _env


def _face_crop(photo, predictor) -> np.ndarray:
    from core.detection import get_detector, select_primary
    from core.images import load_image
    from core.predict import crop_faces, crop_settings_of

    image = load_image(photo)
    settings = crop_settings_of(predictor)
    face = select_primary(get_detector().detect([image], settings.detector_config())[0])
    assert face is not None, photo
    return crop_faces(image, [face], settings)[0]


def _check_map(result: dict, crop: np.ndarray) -> None:
    heat = result["map"]
    assert heat.shape == crop.shape[:2] and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.max() - heat.min() > 0.1, "the map is (nearly) constant"
    assert result["overlay"].shape == crop.shape and result["overlay"].dtype == np.uint8
    assert not np.array_equal(result["overlay"], crop)


def test_gradcam_on_a_trained_run_and_a_real_face(trained_run, face_data):
    from core.predict import load_predictor

    run, cache, _ = trained_run
    predictor = load_predictor(run)
    assert gradcam_available(predictor) == (True, TARGET_LAYERS["resnet"])
    photo = sorted((face_data / "five_celeb" / "val" / "madonna").iterdir())[0]
    crop = _face_crop(photo, predictor)
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}

    result = gradcam(predictor, crop)
    _check_map(result, crop)
    probs = predictor.predict_proba(crop[None])[0]
    assert result["target"] == result["predicted"] == predictor.classes[int(probs.argmax())]
    assert result["prob"] == pytest.approx(float(probs.max()), abs=1e-5)

    # A chosen class: another target, another map.
    other = next(c for c in predictor.classes if c != result["predicted"])
    chosen = gradcam(predictor, crop, other)
    _check_map(chosen, crop)
    assert chosen["target"] == other and not np.allclose(chosen["map"], result["map"])
    assert gradcam(predictor, crop, predictor.classes.index(other))["target"] == other

    # The shared (cached) model is untouched: no hooks left, same weights, still predicts.
    assert not predictor.model.stages[-1][-1]._forward_hooks
    after = predictor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.allclose(predictor.predict_proba(crop[None])[0], probs, atol=1e-6)

    with pytest.raises(ValueError, match="unknown target class 'nobody'; classes: ben_afflek"):
        gradcam(predictor, crop, "nobody")
    with pytest.raises(ValueError, match="uint8"):
        gradcam(predictor, crop.astype(np.float32))


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "vgg16"])
def test_every_cnn_family_has_a_target_layer(arch, astronaut):
    """Untrained weights (no download): the layer is found and gives a map of the crop's shape."""
    from core.models import build_model
    from core.models.registry import get_model_spec
    from core.predictor import Predictor

    model = build_model(arch, num_classes=3, pretrained=False)
    predictor = Predictor(model, arch=arch, classes=["a", "b", "c"], task="identity",
                          preprocessing={**get_model_spec(arch).preprocessing(), "image_size": 64},
                          device=torch.device("cpu"), name=f"untrained-{arch}")
    layer = target_layer(model, arch)
    if arch == "vgg16":
        assert isinstance(layer, torch.nn.ReLU)  # right after features' last conv
    crop = np.ascontiguousarray(astronaut[30:190, 170:330])  # her face, 160 x 160
    result = gradcam(predictor, crop)
    heat = result["map"]
    assert heat.shape == (160, 160) and 0.0 <= heat.min() and heat.max() <= 1.0
    assert result["layer"] == TARGET_LAYERS[arch.rstrip("0123456789")]


def test_models_without_a_conv_map_say_so(astronaut):
    from core.predictor import load_model

    reference = load_model("reference:gender")
    ok, why = gradcam_available(reference)
    assert not ok and "not available" in why and "CNN run" in why
    embedding = types.SimpleNamespace(arch="dlib_face", is_embedding=True, model=object(),
                                      classes=("a", "b"))
    ok, why = gradcam_available(embedding)
    assert not ok and why.startswith("Grad-CAM is not available for dlib_face runs")
    with pytest.raises(GradCamUnavailable, match="dlib_face"):
        gradcam(embedding, astronaut[:160, :160].copy())
    gallery = types.SimpleNamespace(names=["a", "b"], embedder="dlib_face")
    assert not gradcam_available(gallery)[0]


def test_gradcam_cli(trained_run, face_data, tmp_path):
    run, cache, _ = trained_run
    photo = sorted((face_data / "five_celeb" / "val" / "elton_john").iterdir())[0]
    out = tmp_path / "cam.png"
    done = subprocess.run([sys.executable, "-m", "core.gradcam", str(photo), "--run", str(run),
                           "--out", str(out)], cwd=ROOT, env=_env(cache), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("target ") and "layer4" in done.stdout
    from PIL import Image

    assert Image.open(out).size == (320, 160)  # the crop and its overlay side by side
    bad = subprocess.run([sys.executable, "-m", "core.gradcam", str(photo), "--run", "reference:gender"],
                         cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "not available" in bad.stderr
