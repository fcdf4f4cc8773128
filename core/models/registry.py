"""The model registry: names -> builders, with per-architecture defaults for a one-button UI."""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Callable, Mapping

import torch
import torch.nn as nn

from core.models.heads import HEADS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What an architecture needs and what works well for it on a small face dataset.

    Args:
        name: registry name.
        image_size: input side in pixels the defaults were chosen for.
        batch_size, lr, epochs: training defaults (AdamW, cosine schedule) on 2 CPU cores / 1 GPU.
        pretrained: whether starting from ImageNet weights is recommended.
        head, freeze: recommended head and freezing preset.
        mean, std: input normalisation (None: the model takes something other than pixels).
        is_embedding: a frozen embedder whose head is trained on cached embeddings.
        embedding_dim: width of the embeddings (embedding models only).
        stages: how many backbone stages ``freeze="last:N"`` can count (0: nothing to unfreeze).
        paper: where the architecture comes from.
    """

    name: str
    image_size: int
    batch_size: int
    lr: float
    epochs: int
    pretrained: bool = True
    head: str = "linear"
    freeze: str = "none"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    is_embedding: bool = False
    embedding_dim: int | None = None
    stages: int = 0
    paper: str = ""

    def preprocessing(self) -> dict:
        """The input a model of this architecture expects, as plain data for a checkpoint."""
        return {"image_size": self.image_size,
                "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None}


Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}
_SPECS: dict[str, ModelSpec] = {}
# Read-only view: per-architecture defaults, e.g. ARCH_DEFAULTS["resnet18"].lr
ARCH_DEFAULTS: Mapping[str, ModelSpec] = MappingProxyType(_SPECS)


def register_model(name: str | None = None, *,
                   spec: ModelSpec | None = None) -> Callable[[Builder], Builder]:
    """Register a builder ``fn(*, num_classes, pretrained, head, freeze, dropout) -> nn.Module``.

    Args:
        name: registry name (default: the function's name).
        spec: its defaults and input; None gives generic ones (112 px, AdamW 1e-3, 10 epochs).

    Raises:
        ValueError: the name is already registered (a silent overwrite would hide a bug).
    """
    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"a model named {key!r} is already registered")
        nonlocal spec
        spec = spec or ModelSpec(key, image_size=112, batch_size=64, lr=1e-3, epochs=10,
                                 pretrained=False)
        if spec.name != key:
            raise ValueError(f"spec name {spec.name!r} does not match model name {key!r}")
        _BUILDERS[key] = fn
        _SPECS[key] = spec
        return fn
    return wrap


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_BUILDERS)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered architecture (unknown names list the valid ones)."""
    _check_name(name)
    return _SPECS[name]


def is_embedding(name: str) -> bool:
    """True for frozen embedders (dlib_face) whose head trains on cached embeddings."""
    return get_model_spec(name).is_embedding


def freeze_choices(name: str) -> list[str]:
    """The freezing presets ``build_model(name, freeze=...)`` accepts."""
    spec = get_model_spec(name)
    if spec.is_embedding:
        return ["none", "head"]
    return ["none", "head"] + [f"last:{n}" for n in range(1, spec.stages + 1)]


def parse_freeze(freeze: str, n_stages: int) -> int:
    """How many backbone stages (counted from the end) train: "none" -> all, "head" -> 0.

    Raises:
        ValueError: an unknown preset, or N outside 1..n_stages (lists the valid presets).
    """
    valid = f"none, head, last:N with N in 1..{n_stages}"
    if freeze == "none":
        return n_stages
    if freeze == "head":
        return 0
    if isinstance(freeze, str) and freeze.startswith("last:"):
        try:
            n = int(freeze[len("last:"):])
        except ValueError:
            n = -1
        if 1 <= n <= n_stages:
            return n
    raise ValueError(f"invalid freeze {freeze!r}; valid: {valid}")


def build_model(name: str, *, num_classes: int, pretrained: bool = False, head: str = "linear",
                freeze: str = "none", dropout: float = 0.5) -> nn.Module:
    """Build a registered architecture with a fresh head.

    Args:
        name: one of :func:`list_models` (resnet18, resnet50, vgg16, densenet121, dlib_face).
        num_classes: outputs of the head (>= 2).
        pretrained: start the backbone from ImageNet weights (hub cache; see
            ``core.models.imagenet``); ignored by dlib_face, which is always pretrained.
        head: "linear" or "mlp" (GAP -> Linear(256) -> ReLU -> Dropout -> classes).
        freeze: "none" (train everything), "head" (only the head), "last:N" (the last N backbone
            stages and the head); see :func:`freeze_choices`.
        dropout: dropout of the mlp head.

    Returns:
        an ``nn.Module`` with ``.head``, ``.arch``, ``.spec``, ``.preprocessing`` (dict),
        ``.is_embedding``, ``.build_args`` (what rebuilds it) and ``forward_features(x)``.

    Raises:
        ValueError: unknown name / head / freeze (messages list the valid choices).
        WeightsUnavailable: pretrained=True and the weights file is missing offline.
    """
    _check_name(name)
    if head not in HEADS:
        raise ValueError(f"invalid head {head!r}; valid: {', '.join(HEADS)}")
    spec = _SPECS[name]
    if spec.is_embedding:
        if freeze not in ("none", "head"):
            raise ValueError(f"invalid freeze {freeze!r} for {name} (its embedder is always "
                             f"frozen, only the head trains); valid: none, head")
    else:
        parse_freeze(freeze, spec.stages)
    model = _BUILDERS[name](num_classes=num_classes, pretrained=bool(pretrained), head=head,
                            freeze=freeze, dropout=dropout)
    model.build_args = {"name": name, "num_classes": num_classes, "head": head,
                        "freeze": freeze, "dropout": float(dropout)}
    return model


def get_penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features the head sees (N, D): pooled backbone features, or the embeddings themselves
    for an embedding model (whose input already is the embedding). Useful for t-SNE."""
    return model.forward_features(x)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters an optimiser should update (``requires_grad``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
