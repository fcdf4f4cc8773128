"""The Train page through Streamlit's AppTest: defaults that follow the architecture, a clear
message for every bad dataset, and a real background run launched, found again by a second
session (tab), refused a twin, and shown with its final metrics and links when it ends."""
from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from core import runs
from core.launcher import run_state
from core.uploads import save_upload
from tests.conftest import FIVE, _shared_cache, app_ok, open_through_router
from tests.test_launcher import _kill, slice_of_five
from tests.test_uploads import _people_zip

TIMEOUT = 300


def _open() -> AppTest:
    # Through the router: the page links to Evaluate/Predict/Runs, which only exist there.
    return open_through_router("pages/train.py", TIMEOUT)


def _number(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def _launch(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Launch training").click()
    return app_ok(at.run())


@pytest.fixture
def runs_root(tmp_path, monkeypatch, face_data):
    root = tmp_path / "runs"
    monkeypatch.setenv("FACELAB_RUNS", str(root))
    monkeypatch.setenv("FACE_DATA_DIR", str(face_data))
    yield root
    for run in runs.list_runs(root):
        if run.is_active:
            _kill(run)


def test_defaults_follow_the_architecture(runs_root, face_data):
    at = _open()
    assert [t.value for t in at.title] == ["Train"]
    assert any("in the background on CPU" in c.value for c in at.caption)
    assert at.text_input(key="folder").value == str(face_data / "five_celeb")
    assert any(c.value.startswith("5 classes (identity), ") for c in at.caption)
    assert _number(at, "Epochs").value == 10 and _number(at, "Batch size").value == 64
    assert not at.error and [s.value for s in at.subheader] == ["New run"]
    at.selectbox(key="arch").set_value("resnet50")
    app_ok(at.run())
    assert _number(at, "Batch size").value == 32 and _number(at, "Learning rate").value == 5e-4
    assert _number(at, "Epochs").value == 8


def test_every_bad_dataset_gets_a_clear_message(runs_root, tmp_path, face_data):
    at = _open()
    at.text_input(key="folder").set_value(str(tmp_path / "nowhere"))
    app_ok(at.run())
    assert [e.value for e in at.error] == [f"dataset folder not found: {tmp_path / 'nowhere'}"]
    _launch(at)
    assert at.error[-1].value.startswith("Choose a dataset first")

    one = tmp_path / "one" / "madonna"
    one.mkdir(parents=True)
    for photo in sorted((face_data / "five_celeb" / "train" / "madonna").iterdir())[:3]:
        (one / photo.name).symlink_to(photo)
    at.text_input(key="folder").set_value(str(tmp_path / "one"))
    app_ok(at.run())
    assert len(at.error) == 1 and "only one class ('madonna')" in at.error[0].value

    (tmp_path / "empty").mkdir()
    at.text_input(key="folder").set_value(str(tmp_path / "empty"))
    app_ok(at.run())
    assert len(at.error) == 1 and "is empty" in at.error[0].value
    assert runs.list_runs(runs_root) == []


def test_uploaded_datasets_can_be_picked_again(runs_root, face_data):
    report = save_upload(_people_zip(face_data), name="three.zip")
    at = _open()
    at.radio(key="source").set_value("Uploaded before")
    app_ok(at.run())
    assert at.selectbox(key="uploaded").value == report
    assert "three.zip: 3 classes, 9 photos" in at.selectbox(key="uploaded").format_func(report)


def test_launch_is_found_by_a_second_tab_and_ends_with_links(runs_root, face_data,
                                                             tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE", str(_shared_cache(tmp_path_factory)))
    data = slice_of_five(face_data, tmp_path_factory.getbasetemp() / "five-slice")
    at = _open()
    at.text_input(key="folder").set_value(str(data))
    _number(at, "Epochs").set_value(2)
    _number(at, "Image size (px)").set_value(32)
    _number(at, "Batch size").set_value(8)
    next(s for s in at.selectbox if s.label == "Device").set_value("cpu")
    next(t for t in at.text_input if t.label == "Run name (optional)").set_value("from-page")
    _launch(at)
    assert at.query_params["run"] in ("from-page", ["from-page"])
    assert runs.load_run(runs_root / "from-page").status == "running"
    assert any(s.value == "Training from-page" for s in at.subheader)

    # A second tab (a fresh session, no URL) finds the same run, and cannot start a twin.
    other = _open()
    assert any(s.value == "Training from-page" for s in other.subheader)
    assert any(b.label == "Stop" for b in other.button)
    other.text_input(key="folder").set_value(str(data))
    _launch(other)
    assert any("run 'from-page' is still training" in e.value for e in other.error)
    assert [r.name for r in runs.list_runs(runs_root)] == ["from-page"]

    deadline = time.monotonic() + 900
    while run_state(runs_root / "from-page")["active"] and time.monotonic() < deadline:
        time.sleep(1)
    app_ok(at.run())
    assert any(s.value.startswith("Run from-page finished in") for s in at.success)
    labels = [m.label for m in at.metric]
    assert "Best val accuracy" in labels and "Epochs run" in labels
    links = {link.proto.label: parse_qs(link.proto.query_string) for link in at.get("page_link")}
    for label in ("Evaluate from-page", "Use from-page on Predict"):
        assert links[label] == {"run": ["from-page"], "data": [str(data)]}
    assert sorted(runs.load_run(runs_root / "from-page").classes) == sorted(FIVE)
