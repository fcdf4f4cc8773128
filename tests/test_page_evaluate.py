"""The Evaluate page through Streamlit's AppTest: empty state, bad folders, the reference gender
model on real UTKFace chips (cards, matrix, table, error review, ROC slider, exports), and a run
trained here on five_celeb (slow)."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, app_ok

PAGE = str(ROOT / "pages" / "evaluate.py")
TIMEOUT = 600  # an evaluation detects every face once (then the crop cache has them)


def _evaluate(model: str, folder, at: AppTest | None = None) -> AppTest:
    at = at or app_ok(AppTest.from_file(PAGE, default_timeout=TIMEOUT).run())
    option = next(o for o in at.selectbox[0].options if o.startswith(model))
    at.selectbox[0].set_value(option)
    at.text_input(key="data_dir").set_value(str(folder))
    next(b for b in at.button if b.label == "Evaluate").click()
    return app_ok(at.run())


@pytest.fixture(scope="module")
def utk_small(face_data, tmp_path_factory):
    """8 male + 8 female UTKFace chips (symlinks; the data is never copied)."""
    root = tmp_path_factory.mktemp("utk-small")
    for gender in ("male", "female"):
        (root / gender).mkdir()
        for photo in sorted((face_data / "utkface_gender" / gender).iterdir())[400:408]:
            (root / gender / photo.name).symlink_to(photo)
    return root


def test_router_has_the_evaluate_page_with_its_empty_state():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    app_ok(at.run())
    at.switch_page("pages/evaluate.py")
    app_ok(at.run())
    assert [t.value for t in at.title] == ["Evaluate"]
    assert any("press Evaluate" in i.value for i in at.info)
    assert at.selectbox[0].label == "Model"
    assert any(o.startswith("reference:gender") for o in at.selectbox[0].options)
    assert at.text_input(key="data_dir").value == ""
    assert not at.metric and not at.error


def test_missing_or_wrong_folders_say_why(tmp_path):
    at = _evaluate("reference:gender", tmp_path / "nowhere")
    assert [e.value for e in at.error] == [f"data folder not found: {tmp_path / 'nowhere'}"]
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.txt").write_text("not a photo")
    at = _evaluate("reference:gender", tmp_path, at)
    assert len(at.error) == 1 and "no class folders with images" in at.error[0].value
    # An empty folder box is refused before anything runs.
    at.text_input(key="data_dir").set_value("  ")
    next(b for b in at.button if b.label == "Evaluate").click()
    app_ok(at.run())
    assert any("Give the labelled folder" in e.value for e in at.error)


def test_reference_gender_on_utkface(utk_small):
    at = _evaluate("reference:gender", utk_small)
    assert not at.error
    cards = {m.label: m.value for m in at.metric}
    assert cards["Faces (n)"] == "16"
    assert cards["Accuracy"].endswith("%") and cards["Top-5 accuracy"] == "n/a"
    assert [t.label for t in at.tabs] == ["Confusion matrix", "Per class", "Error review",
                                         "Gender ROC", "Export"]
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # matrix, per-class bars, ROC (+ subgroup bars)
    per_class = at.dataframe[0].value
    assert list(per_class["class"]) == ["female", "male"] and per_class["support"].sum() == 16
    # Threshold slider: accepting everything as "male" gives a TPR of 100%.
    slider = next(s for s in at.slider if s.label.startswith("Threshold: predict male"))
    slider.set_value(0.0)
    app_ok(at.run())
    cards = {m.label: m.value for m in at.metric}
    assert cards["TPR"] == "100.0%" and cards["Accuracy at threshold"] == "50.0%"
    # UTKFace names carry race and age: accuracy by subgroup.
    assert any("Accuracy by subgroup" in m.value for m in at.markdown)
    assert [d.label for d in at.get("download_button")] == ["Per-face predictions (CSV)",
                                                            "HTML report (self-contained)"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_trained_run_matrix_table_and_error_review(tmp_path_factory, face_data, monkeypatch):
    from tests.conftest import FIVE, tiny_run

    run, cache, data = tiny_run(tmp_path_factory, face_data)
    monkeypatch.setenv("FACELAB_RUNS", str(run.parent))
    monkeypatch.setenv("FACELAB_CACHE", str(cache))
    at = app_ok(AppTest.from_file(PAGE, default_timeout=TIMEOUT).run())
    assert any(o.startswith("tiny-run") for o in at.selectbox[0].options), at.selectbox[0].options
    at = _evaluate("tiny-run", data / "val", at)
    assert not at.error
    cards = {m.label: m.value for m in at.metric}
    assert cards["Faces (n)"] == "15"
    assert list(at.dataframe[0].value["class"]) == list(FIVE)
    heatmap = at.get("plotly_chart")[0]
    assert heatmap is not None
    pairs = at.dataframe[1].value if len(at.dataframe) > 1 else None
    if pairs is None:  # a perfect run has no confused pairs
        assert any("No errors" in s.value for s in at.success)
        return
    first = pairs.iloc[0]
    assert any(m.value.startswith(f"**{first['true']}** taken for **{first['predicted']}**")
               for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) >= int(first["count"])


@pytest.mark.slow
def test_session_gallery_with_open_set(face_data, tmp_path):
    """The Predict page's gallery (three five_celeb people) evaluated on their val photos, with
    the other two people as strangers: open-set cards, ROC and a threshold slider."""
    from core.gallery import enrol_folder

    known, val, strangers = tmp_path / "known", tmp_path / "val", tmp_path / "strangers"
    for person in ("ben_afflek", "madonna", "mindy_kaling"):
        for split, folder, count in (("train", known, 4), ("val", val, 3)):
            (folder / person).mkdir(parents=True)
            for photo in sorted((face_data / "five_celeb" / split / person).iterdir())[:count]:
                (folder / person / photo.name).symlink_to(photo)
    strangers.mkdir()
    for person in ("elton_john", "jerry_seinfeld"):
        for photo in sorted((face_data / "five_celeb" / "val" / person).iterdir())[:3]:
            (strangers / f"{person}-{photo.name}").symlink_to(photo)
    gallery, _ = enrol_folder(known)

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["facelab_gallery"] = gallery
    app_ok(at.run())
    at.text_input(key="unknown_dir").set_value(str(strangers))
    at = _evaluate("gallery of this session", val, at)
    assert not at.error, [e.value for e in at.error]
    cards = {m.label: m.value for m in at.metric}
    assert cards["Faces (n)"] == "9"
    assert {"EER", "TAR @ FAR 1%", "Threshold @ FAR 1%", "Rank-1 accuracy"} <= set(cards)
    assert "Open set" in [t.label for t in at.tabs]
    slider = next(s for s in at.slider if s.label == "Similarity threshold")
    slider.set_value(1.0)
    app_ok(at.run())
    assert any(c.value.startswith("At 1.00: TAR 0.0%, FAR 0.0%") for c in at.caption)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_link_search_map_and_no_recompute_on_rerun(tmp_path_factory, face_data, monkeypatch):
    """?run=&data= (the Train and Runs links) preselect the run and prefill the held-out split;
    the t-SNE map is drawn; the class search narrows the table, matrix and pairs; and once the
    report is on show, reruns never evaluate again (even with every cache cleared)."""
    import streamlit as st

    import core.evaluate
    from tests.conftest import tiny_run

    run, cache, data = tiny_run(tmp_path_factory, face_data)
    monkeypatch.setenv("FACELAB_RUNS", str(run.parent))
    monkeypatch.setenv("FACELAB_CACHE", str(cache))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run.name
    at.query_params["data"] = str(data)  # the dataset root: its val/ split is prefilled
    app_ok(at.run())
    assert at.selectbox[0].value == str(run)
    assert at.text_input(key="data_dir").value == str(data / "val")
    at.checkbox[0].set_value(True)  # the t-SNE map
    next(b for b in at.button if b.label == "Evaluate").click()
    app_ok(at.run())
    assert not at.error, [e.value for e in at.error]
    assert "Map" in [t.label for t in at.tabs]
    assert any(i.value.startswith("Select points on the map") for i in at.info)
    assert len(at.get("plotly_chart")) >= 2  # matrix, per-class bars
    (face_map,) = at.get("vega_lite_chart")  # the t-SNE map, with a face per point
    spec = json.loads(face_map.proto.spec)
    assert {"field": "image", "title": "image", "type": "nominal"} in spec["encoding"]["tooltip"]
    assert {p["name"] for p in spec["params"]} == {"pick", "box"}

    # From here on the report comes from the session: make any new evaluation fail loudly.
    def no_more(*args, **kwargs):
        raise AssertionError("evaluate_run called on a plain rerun")

    monkeypatch.setattr(core.evaluate, "evaluate_run", no_more)
    st.cache_data.clear()
    at.text_input(key="class_search").set_value("MADONNA")
    app_ok(at.run())
    assert list(at.dataframe[0].value["class"]) == ["madonna"]
    assert any(c.value.startswith("1 class(es) match the search") for c in at.caption)
    if len(at.dataframe) > 1:  # confused pairs, all about madonna
        pairs = at.dataframe[1].value
        assert all("madonna" in (t, p) for t, p in zip(pairs["true"], pairs["predicted"]))
    else:
        assert any("No confused pair involves" in i.value for i in at.info)
    at.radio[0].set_value("row-normalised")
    app_ok(at.run())
    at.text_input(key="class_search").set_value("nobody")
    app_ok(at.run())
    assert any("No class name contains 'nobody'" in w.value for w in at.warning)
    assert len(at.dataframe[0].value) == 5


def test_unknown_run_in_the_link_says_so():
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = "no-such-run"
    at.query_params["data"] = "/nowhere/val"
    app_ok(at.run())
    assert any("'no-such-run' from the link" in w.value for w in at.warning)
    assert at.text_input(key="data_dir").value == "/nowhere/val"


def test_map_selection_joins_clicks_and_the_box():
    from types import SimpleNamespace

    import pandas as pd

    from pages._evaluate_views import map_selection

    points = pd.DataFrame({"index": [0, 1, 2, 3], "x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 2.0, 3.0]})
    event = SimpleNamespace(selection={"pick": [{"index": 3}], "box": {"x": [2.5, 0.5], "y": [0.5, 2.5]}})
    assert map_selection(event, points) == [3, 1, 2]  # picked first, then the box, once each
    assert map_selection(SimpleNamespace(selection={"pick": {}, "box": {}}), points) == []
    assert map_selection(None, points) == []
