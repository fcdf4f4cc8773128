"""Grad-CAM: which parts of a face crop drove a CNN run's answer (the ``grad-cam`` package).

    from core.gradcam import gradcam, gradcam_available
    result = gradcam(predictor, crop)               # target: the predicted class
    result["map"]       # (H, W) float32 in [0, 1], the crop's height and width
    result["overlay"]   # (H, W, 3) uint8: the map blended over the crop (jet colours)

Works for the torchvision CNN runs (resnet18/50, densenet121, vgg16; ``core.models``); the
target layer is the last convolutional feature map before the global pooling. Embedding runs
(dlib_face: a frozen embedder + a head on its 128-D vectors), galleries and the bundled gender
model have no trainable conv map to explain: :func:`gradcam_available` says why.

    python -m core.gradcam PHOTO --run RUN [--target CLASS] [--out overlay.png]
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Any, Sequence

import numpy as np

# Architecture family -> how its target layer is found in core.models' FaceClassifier.stages.
TARGET_LAYERS = {
    "resnet": "the last residual block of layer4",
    "densenet": "the last dense block after norm5 and its ReLU (the features the head pools)",
    "vgg": "the last conv layer of features (its rectified output)",
}


class GradCamUnavailable(ValueError):
    """Grad-CAM cannot explain this model; the message says why."""


def _family(arch: str) -> str | None:
    return next((f for f in TARGET_LAYERS if str(arch).startswith(f)), None)


def gradcam_available(predictor: Any) -> tuple[bool, str]:
    """``(True, target layer)`` for a CNN run, else ``(False, why not)``."""
    arch = getattr(predictor, "arch", None)
    if arch is None or arch == "reference_gender" or not hasattr(predictor, "model"):
        return False, ("Grad-CAM is not available for this model: it needs a CNN run trained here "
                       "(galleries use the frozen dlib embedder; the reference gender model is a "
                       "bundled ONNX network)")
    if getattr(predictor, "is_embedding", False):
        return False, (f"Grad-CAM is not available for {arch} runs: the trained part is a head on "
                       "frozen face embeddings, with no convolutional map to explain")
    family = _family(arch)
    if family is None or not hasattr(predictor.model, "stages"):
        return False, (f"Grad-CAM is not available for architecture {arch!r}; it covers "
                       f"{', '.join(TARGET_LAYERS)} runs")
    return True, TARGET_LAYERS[family]


def target_layer(model: Any, arch: str) -> Any:
    """The module whose output Grad-CAM weighs, for a ``core.models`` FaceClassifier."""
    import torch.nn as nn

    family = _family(arch)
    last = model.stages[-1]
    if family == "resnet":
        return last[-1]          # the last BasicBlock / Bottleneck of layer4
    if family == "densenet":
        return last              # denseblock4 -> norm5 -> ReLU: what the pooling sees
    if family == "vgg":
        # The ReLU right after the last conv: a hook on the conv itself would see its output
        # changed in place by that (inplace=True) ReLU.
        layers = list(last)
        conv = max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d))
        after = layers[conv + 1] if conv + 1 < len(layers) else None
        return after if isinstance(after, nn.ReLU) else layers[conv]
    raise GradCamUnavailable(f"no Grad-CAM target layer for architecture {arch!r}; "
                             f"valid families: {', '.join(TARGET_LAYERS)}")


def gradcam(predictor: Any, crop: np.ndarray, target: str | int | None = None,
            *, alpha: float = 0.45) -> dict[str, Any]:
    """Grad-CAM of one face crop for one class.

    Args:
        predictor: a loaded CNN run (``core.predict.load_predictor`` / ``runs.load_model``).
        crop: (H, W, 3) uint8 RGB face crop, cut with the run's crop settings.
        target: the class to explain: a class name, an index, or None for the predicted class.
        alpha: weight of the heat map in the overlay.

    Returns:
        ``{"map": (H, W) float32 in [0, 1], "overlay": (H, W, 3) uint8, "target": class name,
        "prob": the target's probability, "predicted": top class, "layer": the layer used}``.

    Raises:
        GradCamUnavailable: not a CNN run (embedding runs, galleries, the reference model).
        ValueError: a bad crop or an unknown target class (the message lists the classes).
    """
    import torch
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ok, why = gradcam_available(predictor)
    if not ok:
        raise GradCamUnavailable(why)
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"Grad-CAM needs an (H, W, 3) uint8 RGB crop, got {crop.dtype} {crop.shape}")
    classes = list(predictor.classes)
    probs = np.asarray(predictor.predict_proba(crop[None]))[0]
    predicted = int(probs.argmax())
    if target is None:
        index = predicted
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < len(classes):
            raise ValueError(f"target index {target} out of range 0..{len(classes) - 1}")
        index = int(target)
    elif str(target) in classes:
        index = classes.index(str(target))
    else:
        raise ValueError(f"unknown target class {target!r}; classes: {', '.join(classes)}")

    # A private copy: the loaded model is cached once per process and shared by every page and
    # user; Grad-CAM's hooks and its eval()/grad switches must not touch the shared one.
    model = copy.deepcopy(predictor.model).float()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    x = predictor._inputs(crop[None]).float().detach()
    layer = target_layer(model, predictor.arch)
    with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    h, w = crop.shape[:2]
    if heat.shape != (h, w):  # the model sees the crop resized to its training size
        heat = np.asarray(Image.fromarray(heat).resize((w, h), Image.Resampling.BILINEAR),
                          dtype=np.float32)
    heat = np.clip(heat, 0.0, 1.0)
    return {"map": heat, "overlay": overlay(crop, heat, alpha=alpha), "target": classes[index],
            "prob": float(probs[index]), "predicted": classes[predicted],
            "layer": TARGET_LAYERS[_family(predictor.arch)]}


def overlay(crop: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """The heat map (jet colours: red = most important) blended over the crop."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(crop.astype(np.float32) / 255.0, heat, use_rgb=True,
                             image_weight=1.0 - alpha)


# -- command line ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.gradcam",
                                     description="Grad-CAM of the main face of a photo for a CNN run.")
    parser.add_argument("photo")
    parser.add_argument("--run", required=True, help="run folder (a CNN run)")
    parser.add_argument("--target", default=None, help="class to explain (default: the predicted one)")
    parser.add_argument("--out", default=None, help="write the crop and its overlay side by side (PNG)")
    args = parser.parse_args(argv)
    from PIL import Image

    from core.detection import get_detector, select_primary
    from core.images import ImageError, load_image
    from core.predict import crop_faces, crop_settings_of, load_predictor, whole_image_crop

    try:
        image = load_image(args.photo)
        predictor = load_predictor(args.run)
        settings = crop_settings_of(predictor)
        face = select_primary(get_detector().detect([image], settings.detector_config())[0])
        crop = (crop_faces(image, [face], settings) if face else whole_image_crop(image, settings))[0]
        result = gradcam(predictor, crop, args.target)
    except (ImageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"target {result['target']} (probability {result['prob']:.3f}); predicted "
          f"{result['predicted']}; layer: {result['layer']}")
    if args.out:
        Image.fromarray(np.concatenate([crop, result["overlay"]], axis=1)).save(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
