"""Checkpoints: tensors + plain metadata, written atomically, loadable with ``weights_only=True``.

Stable keys (``version`` 1)::

    version        int, CHECKPOINT_VERSION
    model_state    {name: tensor}   the full model's state dict (for dlib_face: its head)
    arch           str              registry name (core.models.build_model)
    classes        [str]            output order of the model
    task           str              "identity" | "gender"
    head           str              "linear" | "mlp"
    preprocessing  {image_size, mean, std, crop: CropSettings fields}
    config         {...}            the TrainConfig that made it
    metrics        {...}            epoch, val_loss, val_acc, ... at the time of writing
    epoch          int

Only tensors, dicts, lists, str, int, float, bool and None are stored (metadata goes through a
JSON round trip), so ``torch.load(path, weights_only=True)`` never executes pickled code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from core.runs import _json_default, atomic_path

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "model_state", "arch", "classes", "task", "preprocessing")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__(f"checkpoint {self.path} cannot be used: " + "; ".join(self.problems))


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def save_checkpoint(path: str | Path, *, model_state: Mapping[str, torch.Tensor], arch: str,
                    classes: list[str], task: str, preprocessing: dict, head: str = "linear",
                    config: dict | Any = None, metrics: dict | None = None, epoch: int = 0,
                    **extra: Any) -> Path:
    """Write a checkpoint atomically (tmp file, fsync, ``os.replace``).

    Args:
        path: destination (e.g. ``run_dir / "checkpoint.pt"``).
        model_state: the model's ``state_dict()`` (moved to CPU here).
        arch, classes, task, head, preprocessing, config, metrics, epoch: see the module doc.
        extra: further plain metadata (JSON-able).

    Returns:
        the path written.
    """
    state = {}
    for key, value in model_state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model_state[{key!r}] is {type(value).__name__}, not a tensor")
        state[key] = value.detach().to("cpu", copy=True).contiguous()
    payload = {
        "version": CHECKPOINT_VERSION,
        "model_state": state,
        "arch": str(arch),
        "classes": [str(c) for c in classes],
        "task": str(task),
        "head": str(head),
        "preprocessing": _plain(preprocessing),
        "config": _plain(config if config is not None else {}),
        "metrics": _plain(metrics or {}),
        "epoch": int(epoch),
        **_plain(extra),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, *, arch: str | None = None, classes: list[str] | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint file.
        arch, classes: when given, the checkpoint must match them (e.g. the values in run.json).
        map_location: where tensors land.

    Raises:
        CheckpointError: listing what is wrong (missing, damaged/truncated, not a FaceLab
            checkpoint, missing keys, newer version, mismatched arch or classes).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, ["file not found"])
    if path.stat().st_size == 0:
        raise CheckpointError(path, ["the file is empty (0 bytes)"])
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = f"it holds Python objects other than tensors and plain data ({text})"
        else:
            reason = f"the file is damaged or truncated, or not a PyTorch checkpoint ({text})"
        raise CheckpointError(path, [reason]) from None
    if not isinstance(data, dict):
        raise CheckpointError(path, [f"expected a dict, found {type(data).__name__}"])
    problems = validate_checkpoint(data)
    if arch is not None and data.get("arch") != arch:
        problems.append(f"architecture is {data.get('arch')!r}, expected {arch!r}")
    if classes is not None and isinstance(data.get("classes"), list) and list(classes) != data["classes"]:
        problems.append(f"classes differ: checkpoint has {len(data['classes'])} "
                        f"({_short(data['classes'])}), expected {len(classes)} ({_short(classes)})")
    if problems:
        raise CheckpointError(path, problems)
    return data


def _short(items: list, n: int = 5) -> str:
    text = ", ".join(map(str, items[:n]))
    return text + (", ..." if len(items) > n else "")


def validate_checkpoint(data: dict) -> list[str]:
    """Problems with a loaded checkpoint dict (empty list: fine)."""
    problems = []
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)} (not a FaceLab checkpoint?)")
    version = data.get("version")
    if isinstance(version, int) and version > CHECKPOINT_VERSION:
        problems.append(f"version {version} is newer than this FaceLab understands "
                        f"({CHECKPOINT_VERSION}); update FaceLab")
    state = data.get("model_state")
    if "model_state" in data and (not isinstance(state, dict) or not state or
                                  not all(isinstance(v, torch.Tensor) for v in state.values())):
        problems.append("model_state is not a non-empty dict of tensors")
    classes = data.get("classes")
    if "classes" in data and (not isinstance(classes, list) or len(classes) < 2 or
                              not all(isinstance(c, str) for c in classes)):
        problems.append("classes must be a list of at least 2 names")
    prep = data.get("preprocessing")
    if "preprocessing" in data and (not isinstance(prep, dict) or "image_size" not in prep):
        problems.append("preprocessing must be a dict with image_size, mean, std")
    return problems


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                     path: str | Path = "checkpoint") -> None:
    """Raise CheckpointError listing missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing:
        problems.append(f"{len(missing)} weights missing ({_short(missing, 3)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights ({_short(unexpected, 3)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_short(shapes, 3)})")
    if problems:
        raise CheckpointError(path, ["weights do not fit the architecture: " + "; ".join(problems)])
