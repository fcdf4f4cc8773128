"""How preparation and training scale: photos/s and peak memory by dataset size, images/s by
number of processes, side by side in one run.

    python -m bench.scale [--sizes 2500 5000 10000 20000] [--train-photos 2000]
                          [--image-size 64] [--batch-size 32] [--epochs 1] [--workdir DIR] [--quick]

1. A dataset of max(--sizes) photos is built in a temporary folder (never in the repository) by
   repeating ``lfw40`` (19 people, 1,867 photos): copy k of a photo is re-encoded with one pixel
   set from k, so every copy has its own bytes and its own content hash (the cache is content
   keyed: identical copies would be free cache hits and measure nothing).
2. For each size, ``core.prepare`` runs in a fresh subprocess on the first N photos with an empty
   cache: photos/s (detector construction excluded) and the subprocess's own peak RSS
   (``ru_maxrss``). Bounded memory means the peak stays flat as N grows.
3. Training throughput on the first --train-photos photos (prepared in step 2, the largest
   size's cache is kept for this): ``core.train``
   with 1 process, then under ``torchrun --nproc_per_node 2`` (gloo) with the same global batch.
   Images/s are timed from the progress file's batch events of the first epoch (the first step,
   with its one-off warm-up, is left out; validation is not in the window).

On a 2-core CPU the two processes share the same two cores as the one process's two threads, so
this shows the cost of the distributed machinery, not a speed-up; on N GPUs each rank has its own.
``--quick`` (tests): tiny sizes, 32 px, a 2-process run only on a few photos. Other programs on the
machine change the figures: compare the columns of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))


# -- 1. the dataset ----------------------------------------------------------------------------------

def _copy(job: tuple[Path, Path, int]) -> None:
    from PIL import Image

    src, dst, k = job
    with Image.open(src) as image:
        image = image.convert("RGB")
        # One pixel (top-left corner, far from the face) encodes the copy number: new bytes,
        # same face. Quality varies too, as a re-saved web photo would.
        image.putpixel((0, 0), (k % 256, (k // 256) % 256, 128))
        image.save(dst, quality=95 - k % 10)


def make_dataset(folder: Path, n: int, source: Path) -> list[Path]:
    """``n`` photos in ``folder/<person>/``, copies of ``source`` with distinct bytes; reused
    when already built. Returns the files in the order sizes take them (copy 0 of every photo,
    then copy 1, ...)."""
    # Round-robin over the people: every prefix (every size) holds all of them.
    by_person: dict[str, list[Path]] = {}
    for photo in sorted(source.rglob("*.jpg")):
        by_person.setdefault(photo.parent.name, []).append(photo)
    longest = max((len(v) for v in by_person.values()), default=0)
    photos = [v[i] for i in range(longest) for v in by_person.values() if i < len(v)]
    if not photos:
        raise SystemExit(f"no photos in {source} (set FACE_DATA_DIR)")
    jobs = []
    for i in range(n):
        src, k = photos[i % len(photos)], i // len(photos)
        dst = folder / src.parent.name / f"{src.stem}_c{k:03d}.jpg"
        jobs.append((src, dst, k))
    for person in {dst.parent for _, dst, _ in jobs}:
        person.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not job[1].exists()]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_copy, todo))
    return [dst for _, dst, _ in jobs]


# -- 2. preparation in a subprocess -------------------------------------------------------------------

def _prepare_child(list_file: str, cache_root: str) -> int:
    """Child process: prepare the listed photos into an empty cache, print one JSON line."""
    from core.cache import CropCache, CropSettings
    from core.detection import get_detector
    from core.prepare import prepare

    files = Path(list_file).read_text().split("\n")
    detector = get_detector("cpu")  # built before timing: its load is not preparation work
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    summary = prepare(files, CropCache(cache_root, CropSettings(size=160)), detector=detector)
    seconds = time.perf_counter() - start
    print(json.dumps({"n": summary["n"], "seconds": seconds, "detected": summary["detected"],
                      "errors": len(summary["errors"]), "no_face": len(summary["no_face"]),
                      "rss_before_mb": base,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def bench_prepare(files: list[Path], cache_root: Path, work: Path) -> dict:
    list_file = work / f"files-{len(files)}.txt"
    list_file.write_text("\n".join(map(str, files)))
    shutil.rmtree(cache_root, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.scale", "--prepare-child", str(list_file), str(cache_root)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cache_mb"] = sum(p.stat().st_size for p in cache_root.glob("crops.sqlite3*")) / 2**20
    return result


# -- 3. training throughput ---------------------------------------------------------------------------

def _link_subset(files: list[Path], folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    for f in files:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / f.parent.name / f.name).symlink_to(f)
    return folder


def _throughput(run_dir: Path, n_train: int) -> dict:
    """images/s of epoch 1 from the batch events (step 1 excluded), and the epoch's seconds."""
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    batches = [e for e in events if e.get("event") == "batch" and e.get("epoch") == 1]
    first, last = batches[0], batches[-1]
    total = last["total"]
    images = n_train * (last["step"] - first["step"]) / total
    seconds = last["time"] - first["time"]
    history = json.loads((run_dir / "history.jsonl").read_text().splitlines()[0])
    return {"images_per_s": images / seconds if seconds > 0 else float("nan"),
            "steps": total, "epoch_seconds": history["seconds"], "train_loss": history["train_loss"]}


def bench_train(data: Path, cache_root: Path, work: Path, procs: int, args) -> dict:
    out = work / f"run-{procs}p"
    shutil.rmtree(out, ignore_errors=True)
    per_rank = max(2, args.batch_size // procs)  # the same global batch for every process count
    train = ["-m", "core.train", "--data", str(data), "--out", str(out), "--arch", args.arch,
             "--epochs", str(args.epochs), "--image-size", str(args.image_size),
             "--batch-size", str(per_rank), "--device", "cpu", "--no-progress", "--patience", "0",
             "--split", "0.9", "0.1"]
    if procs == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), *train]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "FACELAB_CACHE": str(cache_root)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"training ({procs} process(es)) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"procs": procs, "per_rank_batch": per_rank, "wall": wall, "n_train": result["n_train"],
            **_throughput(out, result["n_train"])}


# -- the run -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--prepare-child":
        return _prepare_child(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    p.add_argument("--train-photos", type=int, default=2000, help="photos in the training subset")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (split over ranks)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--source", type=Path, default=DATA / "lfw40")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the photos, caches and runs go (default: a temporary folder, removed)")
    p.add_argument("--quick", action="store_true", help="smoke test: 32 px, few photos")
    args = p.parse_args(argv)
    sizes = sorted(set(args.sizes))
    if args.quick:
        args.image_size, args.batch_size = 32, 8
        args.train_photos = min(args.train_photos, 40, max(sizes))
    if min(sizes) < 2 or args.train_photos > max(sizes):
        p.error(f"--train-photos ({args.train_photos}) must be <= the largest size ({max(sizes)})")
    if args.workdir is not None:
        chosen = args.workdir.resolve()
        if chosen == ROOT or ROOT in chosen.parents:
            p.error("--workdir must be outside the repository (photos and caches are not committed)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="facelab-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"bench.scale: sizes {sizes}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; work folder {work}", flush=True)
    try:
        t0 = time.perf_counter()
        files = make_dataset(work / "photos", max(sizes), args.source)
        print(f"dataset: {len(files)} photos (distinct bytes) in {time.perf_counter() - t0:.0f} s",
              flush=True)

        rows = []
        train_cache = work / "cache-train"
        for size in sizes:
            cache_root = work / f"cache-{size}"
            row = bench_prepare(files[:size], cache_root, work)
            rows.append(row)
            print(f"  prepared {size}: {row['n'] / row['seconds']:.1f} photos/s, peak RSS "
                  f"{row['peak_rss_mb']:.0f} MB", flush=True)
            if size == sizes[-1]:
                shutil.rmtree(train_cache, ignore_errors=True)
                cache_root.rename(train_cache)  # holds every photo: its crops serve training
            else:
                shutil.rmtree(cache_root, ignore_errors=True)

        subset = _link_subset(files[:args.train_photos], work / "train-subset")
        trains = [bench_train(subset, train_cache, work, procs, args) for procs in (1, 2)]

        print("\npreparation (detect + align + store, 160 px crops, fresh cache each; "
              "subprocess peak RSS)")
        print(f"  {'photos':>7} {'seconds':>9} {'photos/s':>9} {'peak RSS MB':>12} "
              f"{'RSS before MB':>14} {'cache MB':>9} {'no face':>8}")
        for r in rows:
            print(f"  {r['n']:>7} {r['seconds']:>9.1f} {r['n'] / r['seconds']:>9.1f} "
                  f"{r['peak_rss_mb']:>12.0f} {r['rss_before_mb']:>14.0f} {r['cache_mb']:>9.0f} "
                  f"{r['no_face']:>8}")
        print(f"\ntraining, {args.arch} @ {args.image_size} px, global batch {args.batch_size}, "
              f"{trains[0]['n_train']} training photos (of {args.train_photos}), CPU")
        print(f"  {'processes':>9} {'batch/rank':>10} {'steps':>6} {'images/s':>9} "
              f"{'epoch s':>8} {'wall s':>7} {'epoch-1 loss':>13}")
        for t in trains:
            print(f"  {t['procs']:>9} {t['per_rank_batch']:>10} {t['steps']:>6} "
                  f"{t['images_per_s']:>9.1f} {t['epoch_seconds']:>8.1f} {t['wall']:>7.1f} "
                  f"{t['train_loss']:>13.4f}")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other programs share the CPUs)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
