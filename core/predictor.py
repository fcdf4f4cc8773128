"""A trained run as a ready model: ``load_model(run) -> Predictor``.

    from core.runs import load_model
    predictor = load_model("weights/r18-five-celeb")         # or a run name under weights/
    probs = predictor.predict_proba(crops)                     # crops: uint8 (N, H, W, 3)

The predictor applies the checkpoint's preprocessing (resize to the training size, normalise)
to crops cut with its ``crop_settings`` (``core.predict`` cuts them), runs in eval mode in
batches, and is safe to share between threads (no per-call state on the object).
``load_model("reference:gender")`` wraps the bundled reference gender model the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from core import runs
from core.augment import normalize, resize_uint8
from core.checkpoint import CheckpointError, check_state_dict, load_checkpoint

REFERENCE_MODELS = ("reference:gender",)


def _as_batch(crops: Any) -> np.ndarray:
    """uint8 (N, H, W, 3) (a single (H, W, 3) crop becomes N=1), with a clear error otherwise."""
    if isinstance(crops, torch.Tensor):
        crops = crops.cpu().numpy()
    if isinstance(crops, (list, tuple)):
        crops = np.stack([np.asarray(c) for c in crops]) if len(crops) else np.zeros((0, 1, 1, 3), np.uint8)
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 (N, H, W, 3) RGB, got {crops.dtype} {crops.shape}")
    return crops


class Predictor:
    """One loaded model with what is needed to use it.

    Attributes:
        name, run_dir, arch, task, classes (tuple), is_embedding, image_size,
        crop_settings (``core.cache.CropSettings`` the crops must be cut with), metrics,
        config, device.
    """

    batch_size = 64

    def __init__(self, model: nn.Module, *, arch: str, classes: list[str], task: str,
                 preprocessing: dict, device: torch.device, name: str, is_embedding: bool = False,
                 run_dir: Path | None = None, metrics: dict | None = None, config: dict | None = None):
        from core.cache import CropSettings

        self.model = model.to(device).eval()
        self.arch, self.task, self.name = arch, task, name
        self.classes = tuple(classes)
        self.is_embedding = is_embedding
        self.preprocessing = dict(preprocessing)
        self.image_size = int(preprocessing["image_size"])
        self.mean = preprocessing.get("mean")
        self.std = preprocessing.get("std")
        crop = dict(preprocessing.get("crop") or {})
        if "thresholds" in crop:
            crop["thresholds"] = tuple(crop["thresholds"])
        known = set(CropSettings.__dataclass_fields__)
        self.crop_settings = CropSettings(**{k: v for k, v in crop.items() if k in known})
        self.crop = self.crop_settings
        self.device = device
        self.run_dir = run_dir
        self.metrics = dict(metrics or {})
        self.config = dict(config or {})
        self._classifier = self.model.head if is_embedding else self.model

    def __repr__(self) -> str:
        return (f"Predictor({self.name!r}, arch={self.arch}, task={self.task}, "
                f"{len(self.classes)} classes, device={self.device})")

    # -- inputs --------------------------------------------------------------------------------
    def _embeddings(self, crops: np.ndarray) -> np.ndarray:
        from core.models import embed_faces

        return np.asarray(embed_faces(crops, margin=self.crop_settings.margin), dtype=np.float32)

    def _inputs(self, crops: np.ndarray) -> torch.Tensor:
        if self.is_embedding:
            return torch.from_numpy(self._embeddings(crops)).to(self.device)
        # np.require copies only read-only or non-contiguous input (torch cannot wrap read-only)
        pixels = np.require(crops, requirements=("C", "W"))
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        x = resize_uint8(x.contiguous(), self.image_size)
        return normalize(x, self.mean, self.std)

    @torch.inference_mode()
    def _run(self, crops: Any, features: bool = False) -> np.ndarray:
        crops = _as_batch(crops)
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = self._inputs(crops[start:start + self.batch_size])
            if features:  # what the head sees (models' forward_features contract)
                out.append(self.model.forward_features(x).float().cpu().numpy())
            else:
                out.append(torch.softmax(self._classifier(x).float(), dim=1).cpu().numpy())
        if not out:
            width = len(self.classes) if not features else 0
            return np.zeros((0, width), np.float32)
        return np.concatenate(out).astype(np.float32)

    # -- public --------------------------------------------------------------------------------
    def predict_proba(self, crops: Any) -> np.ndarray:
        """Class probabilities (N, C), columns in ``classes`` order."""
        return self._run(crops)

    def predict(self, crops: Any) -> list[str]:
        """The most probable class name per crop."""
        probs = self.predict_proba(crops)
        return [self.classes[i] for i in probs.argmax(1)]

    def features(self, crops: Any) -> np.ndarray:
        """Penultimate features (N, D): what the head sees (pooled backbone features, or the
        embeddings of an embedding model)."""
        return self._run(crops, features=True)

    def embed(self, crops: Any) -> np.ndarray:
        """The embedder's vectors (N, D) of an embedding run (L2-normalised, e.g. dlib's 128-D)."""
        if not self.is_embedding:
            raise TypeError(f"run {self.name} ({self.arch}) is not an embedding model; "
                            f"use features() for its penultimate features")
        return self._embeddings(_as_batch(crops))


class ReferencePredictor:
    """The bundled reference gender model (``core.models.ReferenceGender``) as a Predictor."""

    arch = "reference_gender"
    task = "gender"
    is_embedding = False

    def __init__(self, model: Any, name: str = "reference:gender"):
        from core.cache import CropSettings

        self.model = model
        self.name = name
        self.classes = tuple(getattr(model, "classes", ("female", "male")))
        self.crop_settings = getattr(model, "crop_settings", None) or CropSettings()
        self.crop = self.crop_settings
        self.run_dir = None
        self.metrics: dict = {}
        self.config: dict = {}
        self.device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"ReferencePredictor({self.name!r})"

    def predict_proba(self, crops: Any) -> np.ndarray:
        crops = _as_batch(crops)
        if not len(crops):
            return np.zeros((0, len(self.classes)), np.float32)
        return np.asarray(self.model.predict(crops), dtype=np.float32)

    def predict(self, crops: Any) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(crops).argmax(1)]

    def features(self, crops: Any) -> np.ndarray:
        raise TypeError(f"{self.name} is a bundled ONNX model: it exposes no features")

    def embed(self, crops: Any) -> np.ndarray:
        raise TypeError(f"{self.name} is not an embedding model")

    def extras(self, crops: Any) -> list[dict]:
        """Per-crop extras the reference model offers (its age estimate), else empty dicts."""
        extras = getattr(self.model, "extras", None)
        return list(extras(_as_batch(crops))) if callable(extras) else [{} for _ in _as_batch(crops)]


def _reference(name: str) -> ReferencePredictor:
    if name != "reference:gender":
        raise runs.RunError(f"unknown reference model {name!r}; available: {', '.join(REFERENCE_MODELS)}")
    from core.models import ReferenceGender

    return ReferencePredictor(ReferenceGender(), name)


def load_model(run: str | Path, device: str | torch.device | None = "cpu", *,
               which: str = "best") -> Predictor | ReferencePredictor:
    """Load a run's model for prediction.

    Args:
        run: a run folder, a run name under the runs root, a checkpoint file, or
            ``"reference:gender"``.
        device: "cpu" (default), "cuda", "auto"/None, or a torch.device.
        which: "best" (checkpoint.pt) or "last" (last.pt).

    Raises:
        RunError: no such run.
        CheckpointError: no checkpoint yet, or a damaged / mismatched one (lists the problems).
    """
    text = str(run)
    if text.startswith(runs.REFERENCE_PREFIX):
        return _reference(text)
    from core.device import select_device
    from core.models import build_model
    from core.training_data import is_embedding_arch

    device = device if isinstance(device, torch.device) else select_device(device or "auto")
    path = Path(text).expanduser()
    info: dict = {}
    if path.is_file():
        ckpt_path, run_dir = path, path.parent if (path.parent / runs.RUN_JSON).exists() else None
    else:
        loaded = runs.load_run(run)
        run_dir, info = loaded.path, loaded.info
        if which not in ("best", "last"):
            raise ValueError(f"invalid which {which!r}; valid: best, last")
        ckpt_path = run_dir / (runs.CHECKPOINT if which == "best" else runs.LAST_CHECKPOINT)
        if not ckpt_path.exists():
            raise CheckpointError(ckpt_path, [f"the run has no checkpoint yet (status "
                                              f"{loaded.status}; one is written after each epoch)"])
    ckpt = load_checkpoint(ckpt_path, arch=info.get("arch") or None,
                           classes=info.get("classes") or None)
    arch, classes = ckpt["arch"], ckpt["classes"]
    try:
        model = build_model(arch, num_classes=len(classes), pretrained=False,
                            head=ckpt.get("head", "linear"), freeze="none")
    except (KeyError, ValueError) as exc:
        raise CheckpointError(ckpt_path, [f"cannot build architecture {arch!r}: {exc}"]) from None
    check_state_dict(model, ckpt["model_state"], ckpt_path)
    model.load_state_dict(ckpt["model_state"])
    name = info.get("name") or (run_dir.name if run_dir else ckpt_path.stem)
    return Predictor(model, arch=arch, classes=classes, task=ckpt["task"],
                     preprocessing=ckpt["preprocessing"], device=device, name=name,
                     is_embedding=is_embedding_arch(arch), run_dir=run_dir,
                     metrics=ckpt.get("metrics"), config=ckpt.get("config"))
