"""core.evaluate: evaluate_run plumbing on real photos, and the CLI on a run trained here."""
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


def _evaluate(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "core.evaluate", *args], cwd=ROOT, env=_env(cache),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_evaluate_cli_on_a_trained_run(trained_run, face_data, tmp_path):
    run, cache, data = trained_run
    out = tmp_path / "report.json"
    done = _evaluate(["--run", str(run), "--data", str(data / "val"),
                      "--json", str(out), "--device", "cpu"], cache)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    assert report["n"] == 15 and report["classes"] == list(FIVE)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert "top5_accuracy" not in report  # five classes: top-5 would always be 1
    assert [row["class"] for row in report["per_class"]] == list(FIVE)
    assert all(row["support"] == 3 for row in report["per_class"])
    assert set(report["per_class"][0]) == {"class", "support", "accuracy", "precision", "recall", "f1"}
    matrix = np.array(report["confusion"])
    assert matrix.shape == (5, 5) and matrix.sum() == 15 and (matrix.sum(axis=1) == 3).all()
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 15, abs=1e-6)
    wrong = 15 - np.trace(matrix)
    assert len(report["misclassified"]) == wrong
    assert sum(p["count"] for p in report["confused_pairs"]) == wrong
    for m in report["misclassified"]:
        assert m["true"] != m["predicted"] and 0 < m["confidence"] <= 1
        assert (data / "val" / m["file"]).is_file()
    assert isinstance(report["no_face"], list) and report["unknown_classes"] == []
    assert report["missing_classes"] == [] and report["errors"] == []
    assert report["task"] == "identity" and "open_set" not in report and "binary" not in report


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_evaluate_cli_bad_input(trained_run, face_data, tmp_path):
    run, cache, data = trained_run
    done = _evaluate(["--run", str(run), "--data", str(tmp_path / "nowhere")], cache)
    assert done.returncode == 2 and "data folder not found" in done.stderr
    done = _evaluate(["--run", str(run), "--data", str(data)], cache)
    assert done.returncode == 2 and "split folders" in done.stderr and "val" in done.stderr
    done = _evaluate(["--run", str(tmp_path), "--data", str(data / "val")], cache)
    assert done.returncode == 2 and "run.json" in done.stderr
    # open set needs similarities: a plain classifier is refused with the reason
    done = _evaluate(["--run", str(run), "--data", str(data / "val"),
                      "--unknown", str(face_data / "lfw40" / "Tony_Blair")], cache)
    assert done.returncode == 2 and "embedding run" in done.stderr


class _MeanColour:
    """A stand-in model (the plumbing under test is evaluate_run's): predicts from mean colour."""

    name, task, is_embedding = "mean-colour", "identity", False

    def __init__(self, classes):
        self.classes = tuple(classes)

    def predict_proba(self, crops):
        m = crops.reshape(len(crops), -1).mean(1)
        centres = np.linspace(60, 180, len(self.classes))
        p = np.exp(-((m[:, None] - centres[None]) / 30.0) ** 2) + 1e-6
        return p / p.sum(1, keepdims=True)

    def features(self, crops):
        return crops.reshape(len(crops), -1, 3).mean(1).astype(np.float32)


def test_evaluate_run_matches_folders_and_reports_strays(face_data, tmp_path):
    from core.evaluate import evaluate_run

    data = tmp_path / "data"
    val = face_data / "five_celeb" / "val"
    # folder names differ from the class names in case and separators; one folder is unknown
    (data / "Ben-Afflek").mkdir(parents=True)
    (data / "madonna").mkdir()
    (data / "Tony_Blair").mkdir()
    for name in sorted(os.listdir(val / "ben_afflek"))[:3]:
        (data / "Ben-Afflek" / name).symlink_to(val / "ben_afflek" / name)
    for name in sorted(os.listdir(val / "madonna"))[:3]:
        (data / "madonna" / name).symlink_to(val / "madonna" / name)
    (data / "madonna" / "notes.jpg").write_text("not a photo")
    (data / "Tony_Blair" / "a.jpg").symlink_to(next((face_data / "lfw40" / "Tony_Blair").iterdir()))
    calls = []
    report = evaluate_run(_MeanColour(FIVE), data, callback=lambda *a: calls.append(a),
                          embedding_map=True)
    assert report["n"] == 6
    assert report["unknown_classes"] == [{"class": "Tony_Blair", "n": 1}]
    assert report["missing_classes"] == ["elton_john", "jerry_seinfeld", "mindy_kaling"]
    assert report["errors"] == [{"file": "madonna/notes.jpg", "error": report["errors"][0]["error"]}]
    assert "not an image" in report["errors"][0]["error"]
    assert {p["file"].split("/")[0] for p in report["predictions"]} == {"Ben-Afflek", "madonna"}
    assert {p["true"] for p in report["predictions"]} == {"ben_afflek", "madonna"}
    assert len(report["embedding_map"]) == 6
    assert {c[0] for c in calls} >= {"prepare", "predict"}
    json.dumps(report, allow_nan=False)
    # the page's error review reads faces back from the cache by report file name
    from core.evaluate import report_crops

    crops = report_crops(report, [p["file"] for p in report["predictions"][:2]] + ["madonna/notes.jpg"])
    assert crops[0].shape == (160, 160, 3) and crops[2] is None
