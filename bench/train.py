"""Training throughput vs. pure compute, and warm single-photo prediction latency, side by side.

    python -m bench.train [--data DIR] [--arch resnet18] [--image-size 64] [--batch-size 32]
                          [--epochs 2] [--device auto] [--photo FILE]

1. One epoch through the loop's own input pipeline (``core.training_data.BatchPipeline``: crops
   in memory -> index_select -> batched augmentation -> normalise -> forward/backward/step), beside
   the same model's forward/backward/step on the very same batches materialised beforehand. The
   difference is what the input pipeline costs (target: under 10 % of the epoch). The per-sample
   DataLoader-worker path (``--num-workers 1``) is measured too for comparison.
2. A short real ``fit`` (with its run folder) gives a checkpoint; then one photo with one face goes
   through ``core.predict.predict_photos`` (detect + align + classify), warm: median of N calls
   (target: under 0.5 s on 2 CPU cores).

Crops come from the crop cache (``$FACELAB_CACHE``); photos not cached yet are prepared first
(reported separately: detection is a one-off cost). Figures vary with machine load: compare the
columns of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "five_celeb"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(model: nn.Module, device: torch.device, lr: float):
    from core.device import amp_dtype

    dtype = amp_dtype(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()

    def step(x, y):  # the loop's step (core.training._fit), without its bookkeeping
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def bench_epoch(config, device: torch.device) -> dict:
    from core.callbacks import CallbackList
    from core.models import build_model
    from core.training_data import BatchPipeline, Dist, batch_chunks, epoch_indices, load_train_data

    t0 = time.perf_counter()
    data = load_train_data(config, device, CallbackList())
    load_seconds = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(config.arch, num_classes=len(data.classes), head=config.head)
    channels_last = device.type == "cuda"
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    model.train()
    step = _step_fn(model, device, config.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    chunks = batch_chunks(epoch_indices(data, config, 1, Dist()), config.batch_size)
    n_images = sum(len(c) for c in chunks)
    pipeline = BatchPipeline(data, config, device, generator, channels_last)

    for x, y in list(pipeline.batches(chunks[:2])):  # warm-up: allocator, kernels, autotuning
        step(x, y)
    _sync(device)

    t0 = time.perf_counter()
    for x, y in pipeline.batches(chunks):
        step(x, y)
    _sync(device)
    with_pipeline = time.perf_counter() - t0

    t0 = time.perf_counter()
    ready = list(pipeline.batches(chunks))
    _sync(device)
    pipeline_only = time.perf_counter() - t0

    t0 = time.perf_counter()
    for x, y in ready:
        step(x, y)
    _sync(device)
    compute = time.perf_counter() - t0

    workers = None
    if True:  # the per-sample path for comparison (what DataLoader workers would cost)
        per_sample = BatchPipeline(data, dataclasses.replace(config, num_workers=1), device,
                                   generator, channels_last)
        t0 = time.perf_counter()
        for x, y in per_sample.batches(chunks):
            step(x, y)
        _sync(device)
        workers = time.perf_counter() - t0
    return {"n_images": n_images, "batches": len(chunks), "load_seconds": load_seconds,
            "with_pipeline": with_pipeline, "compute": compute, "pipeline_only": pipeline_only,
            "per_sample_workers": workers}


def bench_predict(config, device: torch.device, photo: Path, repeats: int) -> dict:
    from core.images import load_image
    from core.predict import predict_photos
    from core.runs import load_model
    from core.training import fit

    with tempfile.TemporaryDirectory(prefix="facelab-bench-train-") as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        result = fit(dataclasses.replace(config, out=str(out), epochs=1))
        fit_seconds = time.perf_counter() - t0
        predictor = load_model(out, device=str(device))
        image = load_image(photo)
        from core.detection import get_detector

        detector = get_detector(device)
        predict_photos([image], {"run": predictor}, detector=detector)  # warm: first call
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            answer = predict_photos([image], {"run": predictor}, detector=detector)
            times.append(time.perf_counter() - t0)
    faces = answer[0].get("faces", [])
    return {"fit_1_epoch_seconds": fit_seconds, "val_acc": (result.get("best") or {}).get("val_acc"),
            "median": statistics.median(times), "min": min(times), "faces": len(faces),
            "photo": str(photo), "size": image.shape[:2]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--photo", default=None, help="one photo with one face (default: astronaut)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    from core.config import TrainConfig
    from core.device import describe_device, select_device

    device = select_device(args.device)
    config = TrainConfig(data=args.data, arch=args.arch, image_size=args.image_size,
                         batch_size=args.batch_size, epochs=1, device=args.device).resolved()
    print(f"device: {describe_device(device)}, torch threads {torch.get_num_threads()}; "
          f"{config.arch} @ {config.image_size}px, batch {config.batch_size}, data {config.data}")

    e = bench_epoch(config, device)
    ips = lambda seconds: e["n_images"] / seconds  # noqa: E731
    overhead = (e["with_pipeline"] - e["compute"]) / e["with_pipeline"] * 100
    print(f"\ntraining epoch, {e['n_images']} images in {e['batches']} batches "
          f"(crops loaded from the cache in {e['load_seconds']:.1f} s)")
    print(f"  {'':38s}{'seconds':>9s}{'images/s':>10s}")
    print(f"  {'loop pipeline + forward/backward':38s}{e['with_pipeline']:9.2f}{ips(e['with_pipeline']):10.1f}")
    print(f"  {'forward/backward only (same batches)':38s}{e['compute']:9.2f}{ips(e['compute']):10.1f}")
    print(f"  {'input pipeline alone':38s}{e['pipeline_only']:9.2f}{ips(e['pipeline_only']):10.1f}")
    if e["per_sample_workers"] is not None:
        w = e["per_sample_workers"]
        print(f"  {'per-sample transforms, 1 worker':38s}{w:9.2f}{ips(w):10.1f}")
    print(f"  input pipeline overhead: {overhead:.1f} % of the epoch "
          f"(pipeline alone: {e['pipeline_only'] / e['with_pipeline'] * 100:.1f} %; target < 10 %)")

    photo = Path(args.photo) if args.photo else None
    if photo is None:
        from skimage import data as skdata
        from PIL import Image

        photo = Path(tempfile.gettempdir()) / "facelab-bench-astronaut.png"
        Image.fromarray(skdata.astronaut()).save(photo)
    r = bench_predict(config, device, photo, args.repeats)
    print(f"\nprediction, one photo ({r['size'][1]}x{r['size'][0]}, {r['faces']} face(s)), warm, "
          f"detect + align + classify, {args.repeats} calls")
    print(f"  median {r['median']:.3f} s, min {r['min']:.3f} s (target < 0.5 s on 2 CPU cores)")
    print(f"  (model from a 1-epoch fit taking {r['fit_1_epoch_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
