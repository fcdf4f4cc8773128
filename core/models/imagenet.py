"""ImageNet weights from the local torch hub cache (downloaded only when allowed).

The machines have no internet, so the usual path is: an administrator places torchvision's weight
file in ``torch.hub.get_dir()/checkpoints`` once; we find it there by the file name in the
weights' URL, exactly where ``torchvision`` itself would have cached it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum

OFFLINE_ENV = "FACELAB_OFFLINE"

# torchvision's DenseNet files predate a module rename ("norm.1" -> "norm1"); torchvision
# remaps them in densenet._load_state_dict, which is private, so the same rule lives here.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class WeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable here."""


def weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision caches ``weights``: ``<torch hub dir>/checkpoints/<file of the URL>``."""
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def _missing_message(weights: WeightsEnum, arch: str, reason: str) -> str:
    path = weights_path(weights)
    return (f"ImageNet weights for {arch} are not available ({reason}). Put the file "
            f"{path.name} (from {weights.url}) at {path} -- the torch hub cache, "
            f"$TORCH_HOME/hub/checkpoints -- or train from scratch (pretrained=False).")


def load_imagenet_state_dict(weights: WeightsEnum, *, arch: str = "") -> dict[str, torch.Tensor]:
    """The state dict of ``weights``, from the hub cache, else downloaded if allowed.

    Args:
        weights: a torchvision weights entry, e.g. ``ResNet18_Weights.IMAGENET1K_V1``.
        arch: name used in error messages.

    Returns:
        the tensors, with DenseNet's legacy key names already mapped to the current ones.

    Raises:
        WeightsUnavailable: the file is not cached and ``FACELAB_OFFLINE=1`` forbids a download,
            or the download failed (no network); the message names the exact file to place.
    """
    arch = arch or type(weights).__name__
    path = weights_path(weights)
    if path.is_file():
        # A placed file is trusted by name: its hash prefix is not checked, so a re-saved copy
        # (or a test's stand-in) also loads. weights_only=True: no pickled code runs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif offline():
        raise WeightsUnavailable(_missing_message(weights, arch, f"{OFFLINE_ENV}=1 and {path} "
                                                              f"does not exist"))
    else:
        try:
            state = torch.hub.load_state_dict_from_url(
                weights.url, model_dir=str(path.parent), map_location="cpu", progress=False,
                check_hash=True, file_name=path.name, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available": say where
            raise WeightsUnavailable(_missing_message(
                weights, arch, f"download failed: {type(exc).__name__}: {exc}")) from exc
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
