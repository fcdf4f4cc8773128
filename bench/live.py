"""Live-mode frame rate, side by side in one run: core.live.LiveProcessor at 640x480 with
detection every 1, 3 and 5 frames.

    python -m bench.live [--frames 60] [--hold 10] [--every 1 3 5] [--threads 1 2] [--gallery]

Frames are real photos (five_celeb val, one per person, and scikit-image's astronaut) fitted on
a 640x480 grey canvas, each held for ``--hold`` frames as a camera would show a still face, so
the tracker sees the same face between detections and a new one when the photo changes.
Columns, per detect-every value:
- ``boxes only``: detection and drawing (no labels);
- ``+ gender``: plus the reference gender model (the page's default);
- ``+ gallery``: plus identity from a 5-person dlib gallery (``--gallery``; enrolling costs a
  few seconds first).
Each cell is frames per second over the whole run (frames / seconds, after one warm-up frame)
and the median milliseconds of a detection frame. The machine's load average is printed: other
processes on a 2-core machine slow every figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.live import LiveProcessor, LiveSettings  # noqa: E402
from core.predict import load_predictor  # noqa: E402

SIZE = (640, 480)
PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


def data_dir() -> Path:
    return Path(os.environ.get("FACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def fit(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB").copy()
    image.thumbnail((SIZE[0], SIZE[1] - 40))
    canvas = Image.new("RGB", SIZE, (128, 128, 128))
    canvas.paste(image, ((SIZE[0] - image.width) // 2, 20))
    return np.asarray(canvas)


def camera_frames(count: int, hold: int) -> list[np.ndarray]:
    from skimage import data

    photos = [fit(Image.fromarray(data.astronaut()))]
    for person in PEOPLE:
        folder = data_dir() / "five_celeb" / "val" / person
        if folder.is_dir():
            photos.append(fit(Image.open(sorted(folder.iterdir())[0])))
    return [photos[(i // hold) % len(photos)] for i in range(count)]


def enrol_gallery():
    from core.gallery import enrol_photos

    gallery = None
    for person in PEOPLE:
        photos = sorted((data_dir() / "five_celeb" / "train" / person).iterdir())[:3]
        gallery, _ = enrol_photos(person, photos, gallery=gallery)
    return gallery


def measure(frames: list[np.ndarray], every: int, gender, identity,
            threads: int) -> tuple[float, float]:
    live = LiveProcessor(LiveSettings(detect_every=every, threads=threads), gender=gender,
                         identity=identity)
    live.process(frames[0])  # warm-up: first-call allocations
    live.reset()
    detection_ms = []
    started = time.perf_counter()
    for frame in frames:
        before = live.stats().get("detections", 0)
        t0 = time.perf_counter()
        live.process(frame)
        if live.stats()["detections"] > before:
            detection_ms.append(1000 * (time.perf_counter() - t0))
    seconds = time.perf_counter() - started
    return len(frames) / seconds, statistics.median(detection_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per measurement")
    parser.add_argument("--hold", type=int, default=10, help="frames each photo is shown")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--gallery", action="store_true", help="add the identity column")
    parser.add_argument("--threads", type=int, nargs="+", default=[LiveSettings().threads],
                        help="torch threads for the frames, one row each (0: torch's default)")
    args = parser.parse_args()

    frames = camera_frames(args.frames, args.hold)
    gender = load_predictor("reference:gender")
    columns = {"boxes only": (None, None), "+ gender": (gender, None)}
    if args.gallery:
        columns["+ gallery"] = (gender, enrol_gallery())
    print(f"torch {torch.__version__} (default {torch.get_num_threads()} threads), device cpu, "
          f"load average {os.getloadavg()[0]:.1f}; {len(frames)} frames {SIZE[0]}x{SIZE[1]}, "
          f"detection on a {LiveSettings().detect_side} px copy")
    header = f"{'detect every':<13}{'threads':>8}" + "".join(f"{name + ' fps (det ms)':>26}" for name in columns)
    print(header)
    print("-" * len(header))
    for every in args.every:
        for threads in args.threads:
            cells = []
            for gender_model, identity in columns.values():
                fps, det_ms = measure(frames, every, gender_model, identity, threads)
                cells.append(f"{fps:>14.1f} ({det_ms:>6.0f} ms)")
            print(f"{every:<13}{threads or torch.get_num_threads():>8}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
