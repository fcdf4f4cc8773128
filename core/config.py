"""TrainConfig: every option of one training run. The CLI and the Train page build the same object,
and its resolved form (architecture defaults filled in) is saved with the run."""
from __future__ import annotations

import dataclasses
from typing import Any

TASK_CHOICES = ("auto", "identity", "gender")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "plateau", "none")
HEADS = ("linear", "mlp")
BALANCE_CHOICES = ("none", "weighted", "cap")
DEVICE_CHOICES = ("auto", "cpu", "cuda")

# Used when the architecture declares no default of its own (core.models.ARCH_DEFAULTS).
FALLBACK_DEFAULTS = {"epochs": 10, "image_size": 112, "batch_size": 64, "lr": 1e-3}


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"invalid {name} {value!r}; valid: {', '.join(map(str, choices))}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` fields take the architecture's default (see :meth:`resolved`).

    Args:
        data: dataset folder (see ``core.data.discover_dataset``).
        arch: registered architecture (``core.models.list_models()``).
        out: run folder to create; None trains without writing a run (tests, benchmarks).
        task: identity | gender | auto (gender when the classes are exactly female/male).
        epochs, image_size, batch_size, lr: None = the architecture's default.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: adamw | sgd (momentum 0.9, Nesterov).
        scheduler: cosine (per step, to 0) | plateau (halve on a val-loss plateau) | none.
        pretrained: start from ImageNet weights (from the local torch hub cache).
        head: linear | mlp (GAP -> Dense(256) -> ReLU -> Dropout(0.5) -> classes).
        freeze: none | head (train the head only) | last:N (train the last N stages and the head).
        augment: flip, rotation, shift, shear, zoom, colour jitter (training only).
        balance: none | weighted (sample by 1/class size) | cap (at most median-class per epoch).
        patience: stop after this many epochs without a val-loss improvement; 0 = never.
        seed: seeds the split, the initialisation, the sampling and the augmentation.
        device: auto | cpu | cuda (or cuda:N).
        num_workers: 0 (default) = augment whole batches on the device (no per-image Python);
            N > 0 = per-sample torchvision transforms in N DataLoader worker processes.
        split: train/val/test fractions when the dataset has no split folders.
        crop_size: side of the cached aligned crop (None: max(160, image_size)).
        label_smoothing: cross-entropy label smoothing.
    """

    data: str
    arch: str = "resnet18"
    out: str | None = None
    task: str = "auto"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    pretrained: bool = False
    head: str = "linear"
    freeze: str = "none"
    augment: bool = True
    balance: str = "none"
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    crop_size: int | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", str(self.data))
        if self.out is not None:
            object.__setattr__(self, "out", str(self.out))
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))
        if not self.data:
            raise ValueError("data: give the dataset folder")
        _choice("task", self.task, TASK_CHOICES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("head", self.head, HEADS)
        _choice("balance", self.balance, BALANCE_CHOICES)
        if not (self.device in DEVICE_CHOICES or str(self.device).startswith("cuda:")):
            raise ValueError(f"invalid device {self.device!r}; valid: {', '.join(DEVICE_CHOICES)} "
                             f"(or cuda:N)")
        freeze = str(self.freeze)
        if not (freeze in ("none", "head") or (freeze.startswith("last:") and freeze[5:].isdigit()
                                               and int(freeze[5:]) >= 1)):
            raise ValueError(f"invalid freeze {self.freeze!r}; valid: none, head, last:N (N >= 1)")
        for name, low, high in (("epochs", 1, 10_000), ("image_size", 16, 1024),
                                ("batch_size", 1, 65_536), ("crop_size", 16, 1024)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not low <= value <= high):
                raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
        if self.lr is not None and not 0 < float(self.lr) < 10:
            raise ValueError(f"lr must be a positive number below 10, got {self.lr!r}")
        if not 0 <= float(self.weight_decay) < 1:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0 (0 = no early stopping), "
                             f"got {self.patience!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        if not 0 <= float(self.label_smoothing) < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if len(self.split) not in (2, 3) or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"split must be (train, val[, test]) fractions summing to 1, "
                             f"got {self.split}")

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` replaced by the architecture's default.

        Raises:
            ValueError: an unknown architecture (the message lists the registered ones).
        """
        from core.models import ARCH_DEFAULTS, freeze_choices, list_models

        names = list(list_models())
        if self.arch not in names:
            raise ValueError(f"invalid arch {self.arch!r}; valid: {', '.join(names)}")
        choices = freeze_choices(self.arch)
        if self.freeze not in choices:
            raise ValueError(f"invalid freeze {self.freeze!r} for {self.arch}; valid: "
                             f"{', '.join(choices)}")
        defaults = {**FALLBACK_DEFAULTS, **_plain_defaults(ARCH_DEFAULTS.get(self.arch, {}))}
        changes = {k: defaults[k] for k in FALLBACK_DEFAULTS if getattr(self, k) is None}
        image_size = changes.get("image_size", self.image_size)
        if self.crop_size is None:
            changes["crop_size"] = max(160, int(image_size))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["split"] = list(self.split)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Rebuild from a saved config; unknown keys (from another version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _plain_defaults(defaults: Any) -> dict:
    if dataclasses.is_dataclass(defaults):
        return dataclasses.asdict(defaults)
    return dict(defaults)
