"""Command line: ``python -m core.detect PATH [PATH ...]``.

Prints one JSON object per image, in the schema of ``mtcnn_reference/*.jsonl``:
``{"file", "width", "height", "faces": [{"box", "confidence", "keypoints"}]}``; a file that
cannot be read gives ``{"file", "error"}`` and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterator

from .detection import DetectorConfig, get_detector
from .images import ImageError, iter_image_files, load_image


def detect_files(paths: list[Path], config: DetectorConfig = DetectorConfig(), *,
                 batch_size: int = 8, device: str | None = None,
                 root: Path | None = None) -> Iterator[dict]:
    """Detect faces in image files, ``batch_size`` images per detector call.

    Yields one result dict per path, in order; unreadable files yield ``{"file", "error"}``.
    """
    detector = get_detector(device)
    batch: list[tuple[str, object]] = []

    def name(path: Path) -> str:
        if root is not None:
            try:
                return str(path.resolve().relative_to(root))
            except ValueError:
                pass
        return str(path)

    def flush() -> Iterator[dict]:
        images = [image for _, image in batch if not isinstance(image, str)]
        started = time.perf_counter()
        found = iter(detector.detect(images, config)) if images else iter(())
        seconds = (time.perf_counter() - started) / max(len(images), 1)
        for file, image in batch:
            if isinstance(image, str):
                yield {"file": file, "error": image}
            else:
                height, width = image.shape[:2]
                yield {"file": file, "width": width, "height": height,
                       "seconds": round(seconds, 4),
                       "faces": [face.to_dict() for face in next(found)]}
        batch.clear()

    for path in paths:
        try:
            batch.append((name(path), load_image(path)))
        except ImageError as exc:
            batch.append((name(path), str(exc)))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched recursively)")
    parser.add_argument("--min-face-size", type=float, default=20.0)
    parser.add_argument("--scale-factor", type=float, default=0.709)
    parser.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.8),
                        metavar=("PNET", "RNET", "ONET"))
    parser.add_argument("--batch-size", type=int, default=4, help="images per detector call")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    args = parser.parse_args(argv)
    try:
        config = DetectorConfig(args.min_face_size, args.scale_factor, tuple(args.thresholds))
    except ValueError as exc:
        parser.error(str(exc))
    files = iter_image_files(args.paths)
    if not files:
        parser.error("no image files found in " + ", ".join(map(str, args.paths)))
    root = args.paths[0].resolve() if len(args.paths) == 1 and args.paths[0].is_dir() else None
    failures = 0
    for result in detect_files(files, config, batch_size=args.batch_size, device=args.device, root=root):
        failures += "error" in result
        print(json.dumps(result), flush=True)
    if failures:
        print(f"{failures} of {len(files)} files could not be read", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
