"""core.report: the per-face CSV of real predictions and the self-contained HTML report of a real
evaluation (the reference gender model on a slice of utkface_gender)."""
from __future__ import annotations

import base64
import csv
import io
import re

import numpy as np
import pytest
from PIL import Image

from core.report import html_report, image_data_uri, png_data_uri, prediction_rows, recognised, to_csv


@pytest.fixture(scope="module")
def gender_report(face_data, tmp_path_factory):
    """evaluate_run on 6 male + 6 female UTKFace chips (symlinks; the data is never copied)."""
    from core.evaluate import evaluate_run, report_crops

    root = tmp_path_factory.mktemp("utk-small")
    for gender in ("male", "female"):
        (root / gender).mkdir()
        for photo in sorted((face_data / "utkface_gender" / gender).iterdir())[200:206]:
            (root / gender / photo.name).symlink_to(photo)
    report = evaluate_run("reference:gender", root, device="cpu")
    files = [m["file"] for m in report["misclassified"]]
    return report, dict(zip(files, report_crops(report, files)))


def test_prediction_rows_and_csv_of_a_real_photo(astronaut):
    from core.predict import load_predictor, predict_photos

    results = predict_photos([astronaut, b"not a photo"], {"gender": load_predictor("reference:gender")},
                             top_k=2, names=["astronaut.png", "notes.jpg"])
    rows = prediction_rows(results)
    assert [r["file"] for r in rows] == ["astronaut.png", "notes.jpg"]
    face = rows[0]
    assert face["face"] == 1 and face["model"] == "gender" and face["recognised"] is True
    assert face["label"] in ("female", "male") and 0.5 <= face["score"] <= 1.0
    assert face["x1"] < face["x2"] and face["y1"] < face["y2"]
    assert face["top_k"].count(":") == 2 and face.get("age") is not None
    assert "not an image" in rows[1]["error"]
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == 2 and parsed[0]["label"] == face["label"]
    assert parsed[1]["error"] == rows[1]["error"] and parsed[1]["label"] == ""


def test_recognised_rethresholds_similarity_and_probability():
    gallery_pred = {"top": [{"label": "a", "prob": 0.9}], "score": 0.7, "recognised": False}
    assert recognised(gallery_pred, None) is False
    assert recognised(gallery_pred, 0.6) and not recognised(gallery_pred, 0.8)
    classifier_pred = {"top": [{"label": "a", "prob": 0.55}], "recognised": True}
    assert recognised(classifier_pred, None) and recognised(classifier_pred, 0.5)
    assert not recognised(classifier_pred, 0.6)
    rows = prediction_rows([{"file": "x", "faces": [{"box": [0, 0, 1, 1], "confidence": 1.0,
                                                     "predictions": {"g": gallery_pred}}]}],
                           {"g": 0.8})
    assert rows[0]["recognised"] is False and rows[0]["label"] is None and rows[0]["best_match"] == "a"


def test_html_report_is_self_contained(gender_report):
    report, crops = gender_report
    page = html_report(report, error_crops=crops)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Nothing fetched from elsewhere: no scripts, links or remote sources.
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", page)
    assert "<script" not in page and "<link" not in page
    assert "reference:gender" in page and "Confusion matrix" in page
    for row in report["per_class"]:
        assert f"<td>{row['class']}</td>" in page
    assert f"{report['accuracy']:.3f}" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    expected = sum(c is not None for c in list(crops.values())[:60])
    assert len(images) == expected
    if images:  # each thumbnail is a real, small PNG
        thumb = Image.open(io.BytesIO(base64.b64decode(images[0])))
        assert thumb.format == "PNG" and max(thumb.size) <= 96


def test_html_report_matrix_counts_match(gender_report):
    report, _ = gender_report
    page = html_report(report)
    matrix = page.split("<table class='matrix'>")[1].split("</table>")[0]
    cells = [int(v) if v else 0 for v in re.findall(r"<td style='[^']*'>(\d*)</td>", matrix)]
    assert cells == [v for row in report["confusion"] for v in row]


def test_html_report_cuts_a_large_matrix_to_the_most_confused():
    from core.evaluation import classification_report

    rng = np.random.default_rng(0)
    classes = [f"person_{i:02d}" for i in range(40)]
    y = np.repeat(np.arange(40), 5)
    pred = np.where(rng.random(200) < 0.8, y, rng.integers(0, 40, 200))
    report = classification_report(y, pred, classes, files=[f"{i}.jpg" for i in range(200)])
    report.update(run="synthetic", data_dir="-")
    page = html_report(report)
    assert "30 most confused of 40 classes" in page


def test_html_report_refuses_something_else():
    with pytest.raises(ValueError, match="not an evaluation report"):
        html_report({"accuracy": 1.0})


def test_png_data_uri_round_trip(astronaut):
    uri = png_data_uri(astronaut, side=64)
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.size == (64, 64) and image.mode == "RGB"


def test_jpeg_data_uri_is_smaller_and_bad_format_is_named(astronaut):
    jpeg = image_data_uri(astronaut, side=48, image_format="JPEG")
    assert jpeg.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1])))
    assert image.size == (48, 48) and image.format == "JPEG"
    assert len(jpeg) < len(png_data_uri(astronaut, side=48))
    with pytest.raises(ValueError, match="use 'PNG' or 'JPEG'"):
        image_data_uri(astronaut, image_format="GIF")
