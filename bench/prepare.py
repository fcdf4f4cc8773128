"""Speed of dataset preparation: cold (detect + align + store), warm (cache hits), and memory.

    python -m bench.prepare [DATA_DIR] [--limit N] [--batch-size B] [--size PX] [--cache DIR]

Default DATA_DIR: lfw40 from the shared face data ($FACE_DATA_DIR or ../shared/data). The cache
is a fresh temporary folder (removed afterwards) unless --cache is given. Prints photos/s for
  cold     every photo decoded, detected, aligned and written;
  warm     second run: a stat() per file and one indexed lookup per 256 files;
  rehash   second run without the path memo: every file is read and hashed again;
  read     all crops of the set loaded into one uint8 array (what load_split does);
and the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    import torch

    from core.cache import CropCache, CropSettings
    from core.images import iter_image_files
    from core.prepare import prepare

    data_root = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=data_root / "lfw40")
    parser.add_argument("--limit", type=int, default=None, help="first N photos only (sorted)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"data folder not found: {args.data} (set FACE_DATA_DIR or pass a folder)")
    files = iter_image_files(args.data)[:args.limit]
    cache_root = args.cache or Path(tempfile.mkdtemp(prefix="facelab-bench-"))
    print(f"bench.prepare: {len(files)} photos from {args.data}; batch {args.batch_size}, crops "
          f"{args.size} px; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; cache {cache_root}")
    try:
        settings = CropSettings(size=args.size)
        rows = []

        def run(label: str) -> dict:
            cache = CropCache(cache_root, settings)  # a new view each time, as a new process would
            start = time.perf_counter()
            summary = prepare(files, cache, batch_size=args.batch_size)
            seconds = time.perf_counter() - start
            rows.append((label, seconds, summary))
            return summary

        from core.detection import get_detector

        get_detector()  # built before timing: its load is not preparation work
        run("cold")
        run("warm")
        CropCache(cache_root, settings)._store.conn().execute("DELETE FROM files").connection.commit()
        run("rehash")
        cache = CropCache(cache_root, settings)
        start = time.perf_counter()
        records = [r for r in cache.lookup_many(files) if r is not None and r.ok]
        crops = cache.crops(records, channels_first=True)
        rows.append(("read", time.perf_counter() - start, {"n": len(records)}))

        print(f"{'run':8} {'photos':>7} {'seconds':>9} {'photos/s':>10}  notes")
        for label, seconds, summary in rows:
            notes = ""
            if "detected" in summary:
                notes = (f"detected {summary['detected']}, cached {summary['cached']}, no face "
                         f"{len(summary['no_face'])}, several {len(summary['multi_face'])}, "
                         f"errors {len(summary['errors'])}")
            else:
                notes = f"array {crops.shape} = {crops.nbytes / 2**20:.0f} MB"
            print(f"{label:8} {summary['n']:>7} {seconds:>9.2f} {summary['n'] / seconds:>10.1f}  {notes}")
        size = sum(p.stat().st_size for p in cache_root.glob("crops.sqlite3*"))
        print(f"peak RSS {peak_rss_mb():.0f} MB; cache on disk {size / 2**20:.0f} MB "
              f"({size / max(len(files), 1) / 1024:.0f} KB per photo)")
    finally:
        if args.cache is None:
            shutil.rmtree(cache_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
