"""Detection speed, side by side in one run: FaceLab's MTCNN vs the references.

    python bench/detect.py [--sets scenes five_celeb] [--repeat 1] [--batch-size 8]

Columns, per photo set:
- ``facelab 1x1``: per-image latency, one photo per call (median and total);
- ``facelab batch``: throughput with ``--batch-size`` photos per call;
- ``facenet-pytorch``: the popular PyTorch port, when installed (``make bench`` installs it
  with ``--no-deps``: it pins an older torch);
- ``mtcnn (TF)``: the TensorFlow package, when TensorFlow is installed; otherwise the
  ``seconds`` recorded in ``mtcnn_reference/*.jsonl`` on the same kind of 2-core machine
  (a rough guide: a different run).
Images are decoded once, before timing. Threads: torch's default (all cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.detection import get_detector  # noqa: E402
from core.images import load_image  # noqa: E402


def data_dir() -> Path:
    return Path(os.environ.get("FACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def time_calls(function, batches) -> list[float]:
    times = []
    for batch in batches:
        started = time.perf_counter()
        function(batch)
        times.append(time.perf_counter() - started)
    return times


def facenet_detector():
    try:
        from facenet_pytorch import MTCNN as FacenetMTCNN
    except Exception:  # not installed, or incompatible
        return None
    model = FacenetMTCNN(keep_all=True, device="cpu")

    def run(images):
        if len(images) > 1 and len({img.shape for img in images}) == 1:
            return model.detect(np.stack(images))  # its batching needs equal sizes
        return [model.detect(img) for img in images]
    return run


def tensorflow_detector():
    try:
        import tensorflow  # noqa: F401
        from mtcnn import MTCNN as TFMTCNN
    except Exception:
        return None
    model = TFMTCNN()
    return lambda images: [model.detect_faces(img) for img in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["scenes", "five_celeb"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0, help="photos per set (0: all)")
    args = parser.parse_args()

    detector = get_detector("cpu")
    others = {"facenet-pytorch": facenet_detector(), "mtcnn (TF)": tensorflow_detector()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    for name, available in others.items():
        print(f"{name}: {'measured in this run' if available else 'not installed'}")
    header = f"{'set':<11} {'photos':>6} {'who':<26} {'median s/img':>12} {'total s':>9} {'img/s':>7}"
    print(header)
    print("-" * len(header))
    for set_name in args.sets:
        reference_file = data_dir() / "mtcnn_reference" / f"{set_name}.jsonl"
        records = [json.loads(line) for line in reference_file.read_text().splitlines()]
        if args.limit:
            records = records[: args.limit]
        images = [load_image(data_dir() / set_name / r["file"]) for r in records]
        detector.detect(images[:1])  # warm-up (allocations, kernels)

        def row(who: str, times: list[float], count: int) -> None:
            total = sum(times)
            median = statistics.median(times) if len(times) == count else total / count
            print(f"{set_name:<11} {count:>6} {who:<26} {median:>12.4f} {total:>9.2f} {count / total:>7.1f}")

        single = time_calls(lambda b: detector.detect(b), [[img] for img in images])
        row("facelab 1 per call", single, len(images))
        batches = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]
        row(f"facelab {args.batch_size} per call", time_calls(detector.detect, batches), len(images))
        for who, run in others.items():
            if run is not None:
                run(images[:1])
                row(f"{who} 1 per call", time_calls(run, [[img] for img in images]), len(images))
                if who == "facenet-pytorch":
                    row(f"{who} {args.batch_size} per call", time_calls(run, batches), len(images))
        if others["mtcnn (TF)"] is None:
            row("mtcnn (TF) recorded", [r["seconds"] for r in records], len(records))


if __name__ == "__main__":
    main()
