"""``python -m core.detect``: the reference JSON schema, folders, and bad files mid-batch."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from PIL import Image

from tests.conftest import ROOT


def _run(*args: str) -> tuple[list[dict], str]:
    done = subprocess.run([sys.executable, "-m", "core.detect", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_folder_with_bad_files_in_the_middle(tmp_path, astronaut):
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    jpeg = io.BytesIO()
    Image.fromarray(astronaut).save(jpeg, format="JPEG", quality=90)
    data = jpeg.getvalue()
    (photos / "a_astronaut.jpg").write_bytes(data)
    (photos / "b_empty.jpg").write_bytes(b"")
    (photos / "c_text.jpg").write_text("definitely not a JPEG")
    (photos / "d_truncated.jpg").write_bytes(data[: len(data) // 4])
    Image.new("1", (12000, 12000)).save(photos / "e_bomb.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(photos / "f_pixel.png")
    Image.new("RGB", (320, 240), (90, 160, 220)).save(photos / "nested" / "g_sky.png")
    (photos / "notes.txt").write_text("ignored: not an image extension")

    results, stderr = _run(str(photos), "--batch-size", "3")
    by_file = {r["file"]: r for r in results}
    assert list(by_file) == ["a_astronaut.jpg", "b_empty.jpg", "c_text.jpg", "d_truncated.jpg",
                             "e_bomb.png", "f_pixel.png", "nested/g_sky.png"]

    astronaut_result = by_file["a_astronaut.jpg"]
    assert (astronaut_result["width"], astronaut_result["height"]) == (512, 512)
    (face,) = astronaut_result["faces"]
    assert set(face) == {"box", "confidence", "keypoints"}
    assert len(face["box"]) == 4 and len(face["keypoints"]) == 5 and face["confidence"] > 0.99

    assert "empty" in by_file["b_empty.jpg"]["error"]
    assert "not an image" in by_file["c_text.jpg"]["error"]
    assert "truncated" in by_file["d_truncated.jpg"]["error"] or "cannot" in by_file["d_truncated.jpg"]["error"]
    assert "limit" in by_file["e_bomb.png"]["error"]
    assert by_file["f_pixel.png"]["faces"] == [] and by_file["f_pixel.png"]["width"] == 1
    assert by_file["nested/g_sky.png"]["faces"] == []
    assert "4 of 7 files could not be read" in stderr


def test_reference_schema_on_a_real_group_photo(face_data):
    reference = json.loads((face_data / "mtcnn_reference" / "scenes.jsonl").read_text().splitlines()[1])
    (result,), _ = _run(str(face_data / "scenes" / reference["file"]))
    assert set(reference) - {"seconds"} <= set(result)
    assert (result["width"], result["height"]) == (reference["width"], reference["height"])
    strong = [f for f in reference["faces"] if f["confidence"] >= 0.9]
    assert len(result["faces"]) >= len(strong)


def test_usage_errors_name_the_problem(tmp_path):
    done = subprocess.run([sys.executable, "-m", "core.detect", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no image files found" in done.stderr
    done = subprocess.run([sys.executable, "-m", "core.detect", str(tmp_path), "--scale-factor", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "scale_factor" in done.stderr
