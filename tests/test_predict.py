"""core.predict: every face of a real photo labelled by every run; bad files do not stop a run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIVE, ROOT, _env

PY = sys.executable
GROUP = "group/dlib__2008_001322.jpg"  # 3 faces (dlib examples/faces; PASCAL VOC)


class _MeanColour:
    """A stand-in model for the plumbing tests: predicts from a crop's mean colour."""

    name, task, is_embedding = "mean-colour", "identity", False
    classes = FIVE

    def predict_proba(self, crops):
        assert crops.dtype == np.uint8 and crops.shape[1:] == (160, 160, 3)
        m = crops.reshape(len(crops), -1).mean(1)
        p = np.exp(-((m[:, None] - np.linspace(60, 180, 5)[None]) / 30.0) ** 2) + 1e-6
        return p / p.sum(1, keepdims=True)


def test_predict_photos_inputs_and_messages(face_data, astronaut, tmp_path):
    from core.predict import predict_photos

    group = face_data / "scenes" / GROUP
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    nonface = face_data / "scenes" / "nonface" / "skimage__chelsea.png"
    results = predict_photos([group, group.read_bytes(), astronaut, text, nonface],
                             {"colour": _MeanColour()}, top_k=3, include_crops=True,
                             names=["group.jpg", "upload.jpg", "astronaut", "notes.jpg", "cat.png"])
    assert [r["file"] for r in results] == ["group.jpg", "upload.jpg", "astronaut", "notes.jpg", "cat.png"]
    path_result, bytes_result, astro, bad, cat = results
    assert path_result["n_faces"] == 3 and (path_result["width"], path_result["height"]) == (500, 375)
    for face in path_result["faces"]:
        assert len(face["box"]) == 4 and len(face["keypoints"]) == 5 and face["confidence"] > 0.9
        top = face["predictions"]["colour"]["top"]
        assert len(top) == 3 and top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
        assert {t["label"] for t in top} <= set(FIVE)
        assert face["crop"].shape == (160, 160, 3) and face["crop"].dtype == np.uint8
    # the same photo as bytes gives the same answer
    assert [f["box"] for f in bytes_result["faces"]] == [f["box"] for f in path_result["faces"]]
    assert astro["n_faces"] == 1
    assert "not an image" in bad["error"] and bad["faces"] == []
    assert cat["faces"] == [] and "no face" in cat["message"]
    # without crops the result is plain JSON
    plain = predict_photos([nonface], [_MeanColour()], fallback=True)[0]
    assert plain["faces"][0]["fallback"] is True and "whole image" in plain["message"]
    assert "mean-colour" in plain["faces"][0]["predictions"]
    json.dumps(plain)


def test_predict_photos_bad_arguments(astronaut):
    from core.predict import predict_photos

    with pytest.raises(ValueError, match="top_k"):
        predict_photos([astronaut], [_MeanColour()], top_k=9)
    with pytest.raises(ValueError, match="unknown predictors"):
        predict_photos([astronaut], {"a": _MeanColour()}, threshold={"b": 0.5})


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_load_predictor_is_cached_per_file_version(trained_run):
    from core.predict import load_predictor

    run, _, _ = trained_run
    first = load_predictor(run, "cpu")
    assert load_predictor(str(run), "cpu") is first  # loaded once per process
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    os.utime(run / "checkpoint.pt", ns=(stamp + 10**9, stamp + 10**9))
    assert load_predictor(run, "cpu") is not first  # new weights on disk: loaded again
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        load_predictor(run.parent / "no-such-run")


def _predict(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "core.predict", *args], cwd=ROOT, env=_env(cache),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_predict_cli_group_photo_and_a_bad_file(trained_run, face_data, tmp_path):
    run, cache, _ = trained_run
    text = tmp_path / "letter.jpg"
    text.write_text("Dear FaceLab, this is a text file.")
    group = face_data / "scenes" / GROUP
    done = _predict(["--run", str(run), "--top-k", "2", "--device", "cpu", str(text), str(group)], cache)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    bad, good = lines
    assert bad["file"].endswith("letter.jpg") and "not an image" in bad["error"]
    assert good["n_faces"] == 3 and len(good["faces"]) == 3
    for face in good["faces"]:
        pred = face["predictions"][run.name]
        assert len(pred["top"]) == 2 and pred["top"][0]["label"] in FIVE
        assert 0 < pred["top"][0]["prob"] <= 1 and pred["recognised"] is True
    done = _predict(["--run", str(tmp_path / "missing"), str(group)], cache)
    assert done.returncode == 2 and "not found" in done.stderr
