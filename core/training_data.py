"""Data side of the training loop: crop tensors, per-epoch index order, distributed info.

Kept apart from the loop so a DistributedDataParallel run differs only here: ``Dist`` knows the
rank and world size, ``epoch_indices`` shards one global order across ranks (the sampler is
injected here), and on each machine only local rank 0 prepares crops and writes the split arrays
while the other ranks wait (``Dist.wait_for_data``), then map the same files read-only.

Crops are memory-mapped (``core.data.arrays``): a dataset larger than RAM trains; the batch
pipeline reads each batch's rows (in a background thread, one batch ahead) from the mapping.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from core.augment import augment_batch, normalize
from core.config import TrainConfig

# Keep the whole uint8 dataset on the GPU when it takes at most this share of free memory:
# then a batch is one on-device index_select (no host copy at all).
GPU_DATA_SHARE = 0.25
# How long ranks wait for their machine's local rank 0 to prepare the data (detection of 200k
# photos takes hours; the default collective timeout of 10-30 min would kill the run).
PREPARE_TIMEOUT = datetime.timedelta(hours=float(os.environ.get("FACELAB_PREPARE_TIMEOUT_HOURS", "48")))


def is_embedding_arch(arch: str) -> bool:
    """True for frozen-embedder architectures (dlib_face): only their head is trained."""
    from core import models

    check = getattr(models, "is_embedding", None)
    if callable(check):
        return bool(check(arch))
    return arch == "dlib_face"


def trainable_part(model: nn.Module) -> nn.Module:
    """The part of an embedding model that is trained on the cached embeddings: its head."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no .head module to train on embeddings")
    return head


@dataclasses.dataclass
class Dist:
    """Rank and world size (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _wait_group: Any = None  # gloo group with a long timeout, for Dist.wait_for_data

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        # Created by every rank right away (new_group is collective); gloo: CPU tensors, even
        # beside NCCL, and its timeout is ours.
        group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), local, group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the one process per machine that prepares crops and writes the cache."""
        return self.local_rank == 0

    def wait_for_data(self, stopped: bool) -> bool:
        """Every rank waits here until every machine's local rank 0 has its data ready.

        A barrier with a long timeout (``PREPARE_TIMEOUT``) that also carries a stop flag: True
        on every rank when a stop was requested on any rank during preparation, so all ranks
        end the same way instead of waiting for a rank that left.
        """
        if self.world_size <= 1:
            return stopped
        import torch.distributed as dist

        flag = torch.tensor([int(stopped)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._wait_group)
        return bool(flag.item())

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size <= 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(module.parameters()).is_cuda else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size <= 1:
            return tensor
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts
        them at the start of each forward only, so after the last step of an epoch each rank
        holds statistics updated with its own batch; evaluation must use the checkpoint's."""
        if self.world_size <= 1:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any: ranks must stop at the same batch,
        or DDP's gradient all-reduce would wait forever for the rank that left."""
        if self.world_size <= 1:
            return bool(flag)
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        return bool(self.all_sum(torch.tensor(int(flag), device=device)).item())

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


@dataclasses.dataclass
class TrainData:
    """Everything the loop reads: inputs (uint8 images or float embeddings) and labels per split."""

    classes: tuple[str, ...]
    task: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    embedding: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocessing: dict
    dataset_summary: dict


def epoch_indices(data: TrainData, config: TrainConfig, epoch: int, dist: Dist) -> torch.Tensor:
    """This rank's sample indices for ``epoch``: one seeded global order, sharded by rank.

    Every rank builds the same global order (same seed), pads it to a multiple of the world
    size by repeating its head (as DistributedSampler does) and takes every world_size-th index.
    """
    n = len(data.train_y)
    seed = config.seed * 100_003 + epoch
    if config.balance == "none":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    else:
        from core.data import make_sampler

        sampler = make_sampler(data.train_y.cpu(), config.balance, seed=seed)
        order = torch.tensor(list(iter(sampler)), dtype=torch.int64)
    if dist.world_size > 1:
        pad = (-len(order)) % dist.world_size
        if pad:
            order = torch.cat([order, order[:pad]])
        order = order[dist.rank::dist.world_size]
    return order


def batch_chunks(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an epoch's indices into batches; a trailing batch of one is dropped (BatchNorm
    cannot train on a single sample)."""
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks.pop()
    return chunks


class BatchPipeline:
    """Index chunks -> (inputs, labels) ready on the device. The loop and bench/train.py share it.

    Default: one ``index_select`` on the uint8 tensor (on the GPU when the data fits there, else
    the memory-mapped host array, read one batch ahead), then batched augmentation and
    normalisation on the device (``core.augment``). With ``config.num_workers > 0``: per-sample
    ``core.data.build_transforms`` in DataLoader worker processes instead.
    """

    def __init__(self, data: "TrainData", config: TrainConfig, device: torch.device,
                 generator: torch.Generator | None, channels_last: bool = False):
        self.data, self.config, self.device = data, config, device
        self.generator, self.channels_last = generator, channels_last

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """A gathered batch (uint8 images or float embeddings) -> model input on the device."""
        x = x.to(self.device, non_blocking=True)
        if self.data.embedding:
            return x
        x = x.float().div_(255)
        if train and self.config.augment:
            x = augment_batch(x, self.generator)
        x = normalize(x, self.data.mean, self.data.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self, chunks: list[torch.Tensor]):
        """Yield (inputs, labels) on the device, one per chunk of training indices."""
        data, device = self.data, self.device
        if self.config.num_workers > 0 and not data.embedding:
            from core.data import CropDataset, build_transforms

            transform = build_transforms(int(self.config.image_size), self.config.augment,
                                         mean=data.mean, std=data.std)
            loader = torch.utils.data.DataLoader(
                CropDataset(data.train_x.cpu(), data.train_y.cpu(), transform),
                batch_sampler=[c.tolist() for c in chunks], num_workers=self.config.num_workers,
                pin_memory=device.type == "cuda")
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(device, non_blocking=True)
            return
        if data.train_x.device.type != "cpu" or len(chunks) < 2:
            for idx in chunks:
                x, y = self.gather(idx)
                yield self.prepare(x, train=True), y.to(device, non_blocking=True)
            return
        # Host (memory-mapped) rows: one thread reads the next batch from the mapping while this
        # one trains (index_select releases the GIL); augmentation stays on this thread, in
        # order, so the random draws do not depend on thread timing.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facelab-batch") as pool:
            pending = pool.submit(self.gather, chunks[0])
            for i in range(len(chunks)):
                x, y = pending.result()
                if i + 1 < len(chunks):
                    pending = pool.submit(self.gather, chunks[i + 1])
                yield self.prepare(x, train=True), y.to(device, non_blocking=True)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``idx`` of the training inputs and labels (pinned for a GPU when on the host)."""
        data = self.data
        x = data.train_x.index_select(0, idx.to(data.train_x.device))
        if x.device.type == "cpu" and self.device.type == "cuda":
            x = x.pin_memory()  # so the copy to the GPU can overlap the previous step
        return x, data.train_y.index_select(0, idx.to(data.train_y.device))


class StopBeforeTraining(Exception):
    """A stop request arrived while the data was being prepared (no epoch has run)."""


class _Throttle:
    """Forwards (done, total) to a phase callback at most every ``seconds`` (and at the end);
    raises :class:`StopBeforeTraining` when a stop was requested (preparing can take minutes;
    the cache commits per batch, so stopping here loses nothing)."""

    def __init__(self, cbs, phase: str, seconds: float = 0.5, stop=None):
        self.cbs, self.phase, self.seconds, self.last, self.stop = cbs, phase, seconds, 0.0, stop

    def __call__(self, done: int, total: int, *_: Any) -> None:
        if self.stop is not None and self.stop():
            raise StopBeforeTraining(self.phase)
        now = time.monotonic()
        if done >= total or now - self.last >= self.seconds:
            self.last = now
            self.cbs.on_phase(self.phase, {"done": int(done), "total": int(total)})


def _place(tensor: torch.Tensor, device: torch.device, on_device: bool) -> torch.Tensor:
    # Off the GPU the (memory-mapped) tensor stays as it is: pinning it would copy the whole
    # split into locked RAM; BatchPipeline.gather pins one batch at a time instead.
    return tensor.to(device) if device.type == "cuda" and on_device else tensor


def _fits_on_gpu(nbytes: int, device: torch.device) -> bool:
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - unknown: be conservative, keep the data on the host
        return False
    return nbytes <= GPU_DATA_SHARE * free


def _embed_splits(config: TrainConfig, cache, splits: dict, cbs, stop=None) -> dict[str, torch.Tensor]:
    """Embeddings of every crop, through the embedding cache (computed once per crop)."""
    from core.cache import EmbeddingCache
    from core.gallery.enrol import embedder_key
    from core.models import embed_faces

    # The gallery's key: galleries and training share the vectors.
    store = EmbeddingCache(embedder_key(config.arch, cache.settings), root=cache.root)
    shas = [r.sha for split in splits.values() for r in split.records]
    known = store.get_or_compute(
        shas, lambda part: embed_faces(cache.crops(part), margin=cache.settings.margin),
        progress=_Throttle(cbs, "embedding", stop=stop))
    dim = next(iter(known.values())).shape[0] if known else 128
    out = {}
    for name, split in splits.items():
        rows = [known[r.sha] for r in split.records]
        out[name] = torch.from_numpy(np.stack(rows)) if rows else torch.zeros((0, dim))
    return out


def load_train_data(config: TrainConfig, device: torch.device, cbs, dist: Dist | None = None,
                    stop=None) -> TrainData:
    """Discover the dataset, load (preparing if needed) every split's crops as memory-mapped
    arrays (or embeddings), describe them.

    ``stop`` (a callable) is polled while photos are prepared or embedded. Distributed: local
    rank 0 of each machine prepares, writes the arrays and embeds; the other ranks wait, then
    only read (nothing in the cache is written twice, nothing by them).
    """
    from core.cache import CropCache, CropSettings
    from core.data import IMAGENET_MEAN, IMAGENET_STD, discover_dataset, load_split

    dist = dist or Dist()
    cbs.on_phase("loading", {"data": str(config.data)})
    spec = discover_dataset(config.data, task=None if config.task == "auto" else config.task,
                            split=config.split, seed=config.seed)
    settings = CropSettings(size=int(config.crop_size))
    cache = CropCache(settings=settings)
    cbs.on_phase("dataset", {"classes": len(spec.classes), "split_source": spec.split_source,
                             **{k: len(v) for k, v in spec.samples.items()}})
    embedding = bool(is_embedding_arch(config.arch))
    size = int(config.image_size)

    def load(writer: bool) -> tuple[dict, dict | None]:
        splits = {}
        for name in ("train", "val", "test"):
            if not spec.samples.get(name):
                continue
            splits[name] = load_split(
                spec, name, cache, size=size, images=not embedding, prepare_missing=writer,
                skip_missing=not writer,
                callback=_Throttle(cbs, f"preparing {name}", stop=stop),
                array_callback=_Throttle(cbs, f"writing the {name} array", stop=stop))
        vectors = _embed_splits(config, cache, splits, cbs, stop) if embedding else None
        return splits, vectors

    if dist.world_size <= 1:
        splits, vectors = load(True)
    else:
        stopped, loaded = False, None
        if dist.is_local_main:
            try:
                loaded = load(True)
            except StopBeforeTraining:
                stopped = True  # still reach the wait below, so the other ranks hear of it
        if dist.wait_for_data(stopped):
            raise StopBeforeTraining("stop requested while preparing")
        splits, vectors = loaded if loaded is not None else load(False)
    from core.models import get_model_spec

    model_spec = get_model_spec(config.arch)
    mean = tuple(model_spec.mean or IMAGENET_MEAN)
    std = tuple(model_spec.std or IMAGENET_STD)
    if embedding:
        tensors = vectors
        preprocessing = {"image_size": settings.size, "mean": None, "std": None,
                         "crop": dataclasses.asdict(settings), "input": "embedding:" + config.arch}
    else:
        tensors = {name: split.images for name, split in splits.items()}
        preprocessing = {"image_size": size, "mean": list(mean), "std": list(std),
                         "crop": dataclasses.asdict(settings), "input": "image",
                         "resize": "bilinear-antialias-uint8"}
    empty_x = torch.zeros((0, *tensors["train"].shape[1:]), dtype=tensors["train"].dtype)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    on_gpu = device.type == "cuda" and _fits_on_gpu(nbytes, device)
    place = lambda t: _place(t, device, on_gpu)  # noqa: E731
    labels = {name: split.labels for name, split in splits.items()}
    empty_y = torch.zeros(0, dtype=torch.int64)
    summary = spec.summary()
    summary["skipped"] = {name: [[str(p), e] for p, e in split.skipped] for name, split in splits.items()
                          if split.skipped}
    summary["fallback"] = {name: sum(r.fallback for r in split.records) for name, split in splits.items()}
    return TrainData(
        classes=tuple(spec.classes), task=spec.task,
        train_x=place(tensors["train"]), train_y=place(labels["train"]),
        val_x=place(tensors["val"]), val_y=labels["val"].to(device),
        test_x=place(tensors.get("test", empty_x)), test_y=labels.get("test", empty_y).to(device),
        embedding=embedding, mean=mean, std=std,
        preprocessing=preprocessing, dataset_summary=summary)
