"""From a :class:`DatasetSpec` to crop tensors, augmentation and class balancing.

A split's crops are one ``uint8`` tensor (N, 3, S, S) memory-mapped from an array file in the
cache folder (``core.data.arrays``: written once in bounded chunks, reused by later runs), so a
split of 200,000 photos is never held in RAM: the training loop reads the rows of each batch
(no decoding, no per-image Python) and the OS page cache keeps what fits.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from core.cache import CropCache
from core.data.spec import DatasetError, DatasetSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BALANCE_MODES = ("none", "weighted", "cap")


class SplitData(tuple):
    """``(images uint8 (N,3,S,S) memory-mapped, labels int64 (N,), records)``; unpacks as a 3-tuple.

    Extra attributes: ``paths`` (N paths, row order) and ``skipped`` ([(path, error)] for files
    that could not be read and are therefore not in the tensors).
    """

    def __new__(cls, images, labels, records, paths, skipped):
        self = super().__new__(cls, (images, labels, records))
        self.paths, self.skipped = paths, skipped
        return self

    images = property(lambda self: self[0])
    labels = property(lambda self: self[1])
    records = property(lambda self: self[2])


def load_split(spec: DatasetSpec, split: str, cache: CropCache | None = None, *,
               size: int | None = None, images: bool = True, detector=None, batch_size: int = 8,
               callback=None, array_callback=None, prepare_missing: bool = True,
               skip_missing: bool = False) -> SplitData:
    """Crops and labels of one split, from the cache (preparing the photos not in it yet).

    Args:
        spec: from :func:`discover_dataset`.
        split: "train", "val" or "test".
        cache: crop cache (its settings decide crop size and margin); default ``CropCache()``.
        size: side of the returned images (default: the crop size); resized once, when the
            split's array file is built.
        images: False returns ``images=None`` (e.g. for embedding architectures, which read
            crops from the cache in batches themselves).
        detector, batch_size, callback: passed to :func:`core.prepare.prepare` for missing photos.
        array_callback: ``(done, total)`` while the split's array file is written (first time).
        prepare_missing: False raises instead of detecting (e.g. inside a time-boxed UI call).
        skip_missing: with ``prepare_missing=False``, leave photos that are not in the cache out
            (as skipped) instead of raising: what a reader rank does after the writer rank
            prepared the split (a photo whose detection failed there is missing here too).

    Returns:
        :class:`SplitData`: ``images, labels, records = load_split(...)``; ``images`` is
        memory-mapped (see ``core.data.arrays``). Unreadable files are left out (listed in
        ``.skipped`` and warned about).
    """
    cache = cache if cache is not None else CropCache()
    if split not in spec.samples:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(spec.samples)}")
    samples = list(spec.samples[split])
    paths = [p for p, _ in samples]
    records = cache.lookup_many(paths)
    missing = [p for p, r in zip(paths, records) if r is None]
    if missing and not (skip_missing and not prepare_missing):
        if not prepare_missing:
            raise DatasetError(f"{len(missing)} photo(s) of the {split} split are not in the crop "
                               f"cache {cache.root}; run: python -m core.prepare {spec.root}")
        from core.prepare import prepare

        prepare(missing, cache, detector=detector, batch_size=batch_size, callback=callback)
        again = iter(cache.lookup_many(missing))
        records = [r if r is not None else next(again) for r in records]
    kept, skipped = [], []
    for (path, label), record in zip(samples, records):
        if record is None or record.error is not None:
            skipped.append((path, record.error if record is not None else "could not be read"))
        else:
            kept.append((path, label, record))
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable photo(s) left out of the {split} split, e.g. "
                      f"{skipped[0][0]}: {skipped[0][1]}", stacklevel=2)
    if not kept:
        raise DatasetError(f"no usable photos in the {split} split of {spec.root}")
    tensor = None
    if images:
        from core.data.arrays import crop_array

        tensor = crop_array(cache, [r.sha for _, _, r in kept], size, callback=array_callback)
    labels = torch.tensor([y for _, y, _ in kept], dtype=torch.int64)
    return SplitData(tensor, labels, [r for _, _, r in kept], [p for p, _, _ in kept], skipped)


load_crops = load_split  # the name used in the team contract


def build_transforms(image_size: int, augment: bool = False, *,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """uint8 (3,S,S) tensor -> normalised float32 (3, image_size, image_size).

    With ``augment``: the source notebooks' Keras ``ImageDataGenerator`` recipe (horizontal flip,
    rotation, width/height shift, shear, zoom as one RandomAffine) plus a mild colour jitter: the
    same recipe as the batched ``core.augment`` the training loop uses by default.
    Resizing comes first so augmentation runs at the (usually smaller) training size.
    """
    from torchvision.transforms import v2

    steps = [v2.Resize((image_size, image_size), antialias=True)]
    if augment:
        steps += [
            v2.RandomHorizontalFlip(),
            # ~ rotation_range=15, width/height_shift_range=0.1, shear_range=10, zoom_range=0.1.
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10),
            # No hue shift: skin tone is a cue, and core.augment (the batched form) has none.
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


class CropDataset(Dataset):
    """Crops (in memory or memory-mapped) with labels; ``transform`` runs per sample on the
    uint8 tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ClassCapSampler(Sampler[int]):
    """Each epoch draws at most ``cap`` random samples per class (a fresh draw every epoch,
    so over epochs every photo of a large class is used), shuffled together."""

    def __init__(self, labels: Sequence[int] | torch.Tensor, cap: int, *, seed: int = 0):
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        labels = torch.as_tensor(labels)
        self.groups = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
        self.cap = cap
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return sum(min(len(g), self.cap) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        chosen = [g[torch.randperm(len(g), generator=self.generator)[:self.cap]] for g in self.groups]
        picked = torch.cat(chosen)
        return iter(picked[torch.randperm(len(picked), generator=self.generator)].tolist())


def class_counts(labels: Sequence[int] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    return torch.bincount(labels, minlength=num_classes or 0)


def make_sampler(labels: Sequence[int] | torch.Tensor, balance: str = "none", *,
                 cap: int | None = None, seed: int = 0, num_samples: int | None = None):
    """A sampler for a DataLoader, or None (plain shuffle) for ``balance="none"``.

    Args:
        balance: "none"; "weighted" (WeightedRandomSampler, weight 1/class count, with
            replacement, ``num_samples`` per epoch, default len(labels)); or "cap" (at most
            ``cap`` per class per epoch, default the median class size).
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance {balance!r}; choose one of {', '.join(BALANCE_MODES)}")
    labels = torch.as_tensor(labels)
    if balance == "none":
        return None
    counts = class_counts(labels)
    if balance == "weighted":
        weights = (1.0 / counts.clamp(min=1).double())[labels]
        return WeightedRandomSampler(weights, num_samples or len(labels), replacement=True,
                                     generator=torch.Generator().manual_seed(seed))
    if cap is None:
        cap = int(counts[counts > 0].median())
    return ClassCapSampler(labels, cap, seed=seed)
