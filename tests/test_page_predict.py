"""The Predict page through Streamlit's AppTest: empty state, real photos, bad files, a gallery
enrolled from real five_celeb photos, and the behaviour probe."""
from __future__ import annotations

import io

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, app_ok

PAGE = str(ROOT / "pages" / "predict.py")
TIMEOUT = 300  # first run imports torch and loads the detector and models on a busy 2-core box


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    return app_ok(at.run())


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_router_has_the_predict_page_with_its_empty_state():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    app_ok(at.run())
    at.switch_page("pages/predict.py")
    app_ok(at.run())
    assert [t.value for t in at.title] == ["Predict"]
    assert any("Upload one or more photos" in i.value for i in at.info)
    assert at.file_uploader(key="photos").accept_multiple_files
    assert [m.label for m in at.multiselect] == ["Models (up to two, side by side)"]
    assert {"Top-k labels", "Similarity threshold (gallery, embedding runs)"} <= {s.label for s in at.slider}
    assert "reference:gender" in at.multiselect[0].options[-1]
    assert not at.error


def test_photo_bad_file_and_no_face(astronaut):
    at = _page()
    at.file_uploader(key="photos").set_value([
        ("astronaut.png", _png(astronaut), "image/png"),
        ("notes.jpg", b"these are my notes, not a photo\n", "image/jpeg"),
        ("suit.png", _png(astronaut[300:480, 20:200].copy()), "image/png"),
    ])
    app_ok(at.run())
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("notes.jpg: ") and "not an image" in errors[0]
    assert any(w.value.startswith("No face found in suit.png") for w in at.warning)
    captions = [c for image in at.image for c in image.captions]
    assert "Face 1" in captions and "512x512 pixels" in captions
    # Gender and age from the reference model, on by default.
    gender = [m.value for m in at.markdown if m.value.startswith(("**female**", "**male**"))]
    assert len(gender) == 1 and "%" in gender[0] and "age ~" in gender[0]
    assert len(at.get("download_button")) == 1
    # The behaviour probe: a plot, and the perturbed crop's answer under it.
    assert len(at.get("plotly_chart")) == 1
    assert [r.label for r in at.radio] == ["Perturbation"]
    at.radio[0].set_value("blur")
    app_ok(at.run())
    slider = next(s for s in at.slider if s.label == "blur (px)")
    assert slider.value == 0.0
    before = [c for image in at.image for c in image.captions][-1]  # the perturbed crop's answer
    slider.set_value(6.0)
    app_ok(at.run())
    after = [c for image in at.image for c in image.captions][-1]
    assert before != after and after.split()[0] in ("female", "male"), (before, after)
    sweep = at.dataframe[-1].value
    assert list(sweep["value"]) == sorted(sweep["value"]) and 0.0 in list(sweep["value"])


@pytest.mark.slow
def test_enrol_two_people_from_a_folder_and_recognise_one(face_data, tmp_path):
    people = tmp_path / "people"
    for person in ("madonna", "elton_john"):
        (people / person).mkdir(parents=True)
        for photo in sorted((face_data / "five_celeb" / "train" / person).iterdir())[:4]:
            (people / person / photo.name).symlink_to(photo)
    at = _page()
    at.text_input(key="enrol_folder").set_value(str(people))
    app_ok(at.run())
    _button(at, "Enrol every person in the folder").click()
    app_ok(at.run())
    assert any(s.value.startswith("Enrolled ") and "madonna" in s.value and "elton_john" in s.value
               for s in at.success), [s.value for s in at.success] + [e.value for e in at.error]
    at.multiselect[0].set_value(["gallery"])
    at.checkbox[0].set_value(False)  # identity only: keeps the test short
    photo = sorted((face_data / "five_celeb" / "val" / "madonna").iterdir())[0]
    at.file_uploader(key="photos").set_value([(photo.name, photo.read_bytes(), "image/jpeg")])
    app_ok(at.run())
    answers = [t.value for t in at.text]
    assert answers and answers[0].startswith("1. madonna (similarity"), answers
    assert not any("not recognised" in m.value for m in at.markdown)
    # Raise the threshold above any similarity: the same face is now "not recognised", no rerun
    # of the model needed.
    next(s for s in at.slider if s.label.startswith("Similarity threshold")).set_value(1.0)
    app_ok(at.run())
    assert any("not recognised" in m.value for m in at.markdown)


def test_huge_and_empty_files_are_refused_clearly():
    from tests.test_app import _png_header_only

    at = _page()
    at.file_uploader(key="photos").set_value([
        ("huge.png", _png_header_only(30_000, 20_000), "image/png"),
        ("empty.jpg", b"", "image/jpeg"),
    ])
    app_ok(at.run())
    errors = [e.value for e in at.error]
    assert len(errors) == 2, errors
    assert errors[0].startswith("huge.png: ") and "too large" in errors[0]
    assert errors[1].startswith("empty.jpg: ") and "empty" in errors[1]
    # No face, no probe: the probe says what it needs instead of failing.
    assert any("needed to probe" in i.value for i in at.info)


@pytest.mark.slow
def test_run_from_the_url_is_preselected_and_the_probe_shows_gradcam(trained_run, face_data,
                                                                   monkeypatch):
    """?run=NAME (the Train and Runs pages link with it) preselects the run; the probe panel of
    a CNN run shows the crop and its Grad-CAM overlay, for the predicted or a chosen class."""
    run, cache, _ = trained_run
    monkeypatch.setenv("FACELAB_RUNS", str(run.parent))
    monkeypatch.setenv("FACELAB_CACHE", str(cache))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run.name
    app_ok(at.run())
    assert at.multiselect[0].value == [str(run)], at.multiselect[0].value
    at.checkbox[0].set_value(False)  # identity only
    photo = sorted((face_data / "five_celeb" / "val" / "madonna").iterdir())[0]
    at.file_uploader(key="photos").set_value([(photo.name, photo.read_bytes(), "image/jpeg")])
    app_ok(at.run())
    assert not at.error, [e.value for e in at.error]
    assert any(m.value.startswith("**Grad-CAM**") for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    assert captions[-2] == "face crop", captions
    predicted = captions[-1]
    assert predicted.split()[0] in ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna",
                                    "mindy_kaling"), captions
    target = at.selectbox(key="gradcam_target")
    other = next(c for c in target.options[1:] if c != predicted.split()[0])
    target.set_value(other)
    app_ok(at.run())
    assert [c for image in at.image for c in image.captions][-1].startswith(f"{other} 0.")
    assert any(f"raised the score of **{other}**" in c.value for c in at.caption)


def test_unknown_run_in_the_url_and_no_gradcam_for_the_reference_model(astronaut):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = "no-such-run"
    app_ok(at.run())
    assert any("'no-such-run' from the link" in w.value for w in at.warning)
    assert at.multiselect[0].value == []
    at.file_uploader(key="photos").set_value([("astronaut.png", _png(astronaut), "image/png")])
    app_ok(at.run())
    # The probe runs on the reference gender model, which Grad-CAM cannot explain: it says so.
    assert any("Grad-CAM is not available" in c.value for c in at.caption)
