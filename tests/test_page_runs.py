"""The Runs page through Streamlit's AppTest, on copies of two real tiny runs (see
tests/test_compare.py): the table and its filters, comparing runs, rename, note, delete with
confirmation, a running run refused, an interrupted run explained, and the links to Evaluate and
Predict."""
from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import RUN_JSON, load_run
from core.storage import process_identity
from tests.conftest import app_ok, open_through_router
from tests.test_compare import compare_runs, copy_run, dead_process, edit_run_json

pytestmark = pytest.mark.slow
TIMEOUT = 300  # the router's sidebar loads the face detector once per process


def _open() -> AppTest:
    return open_through_router("pages/runs.py", TIMEOUT)


def _select(at: AppTest, *names: str) -> AppTest:
    at.multiselect(key="runs_selected").set_value(list(names))
    return app_ok(at.run())


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


@pytest.fixture
def root(tmp_path_factory, face_data, tmp_path, monkeypatch):
    """A fresh runs root holding copies of the two trained runs (r18-a: 2 epochs, lr 1e-3;
    r18-b: 1 epoch, lr 3e-3, no augmentation)."""
    trained, _data = compare_runs(tmp_path_factory, face_data)
    for name in ("r18-a", "r18-b"):
        copy_run(trained / name, tmp_path)
    monkeypatch.setenv("FACELAB_RUNS", str(tmp_path))
    return tmp_path


def test_no_runs_points_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_RUNS", str(tmp_path / "empty"))
    at = _open()
    assert [t.value for t in at.title] == ["Runs"]
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.dataframe


def test_table_and_filters(root):
    edit_run_json(root / "r18-b", status="failed", error="RuntimeError: out of memory")
    at = _open()
    table = at.dataframe[0].value
    assert sorted(table["name"]) == ["r18-a", "r18-b"]
    assert set(table["status"]) == {"finished", "failed"}
    assert {"dataset", "arch", "epochs", "lr", "val_acc", "val_loss", "duration_min", "device",
            "created", "note"} <= set(table.columns)
    assert any("finished: 1" in m.value for m in at.markdown)  # the status badges
    assert any("failed: 1" in m.value for m in at.markdown)
    at.text_input[0].set_value("R18-A")
    app_ok(at.run())
    assert list(at.dataframe[0].value["name"]) == ["r18-a"]
    assert any("1 of 2 runs" in c.value for c in at.caption)
    at.text_input[0].set_value("")
    next(m for m in at.multiselect if m.label == "Status").set_value(["failed"])
    app_ok(at.run())
    assert list(at.dataframe[0].value["name"]) == ["r18-b"]
    next(m for m in at.multiselect if m.label == "Architecture").set_value(["resnet18"])
    next(m for m in at.multiselect if m.label == "Dataset").set_value(["five-runs"])
    app_ok(at.run())
    assert list(at.dataframe[0].value["name"]) == ["r18-b"]
    assert any("Select runs" in i.value for i in at.info)
    # A failed run shows its error when selected.
    _select(at, "r18-b")
    assert any("RuntimeError: out of memory" in e.value for e in at.error)


def test_compare_two_runs(root):
    at = _select(_open(), "r18-a", "r18-b")
    assert [h.value for h in at.header] == ["Compare", "Manage"]
    assert len(at.get("plotly_chart")) == 1
    frames = [d.value for d in at.dataframe]
    per_class = next(f for f in frames if "class" in f.columns)
    assert list(per_class.columns) == ["class", "r18-a", "r18-b", "n r18-a", "n r18-b",
                                       "r18-b - r18-a"]
    assert len(per_class) == 5
    settings = next(f for f in frames if "setting" in f.columns)
    assert set(settings["setting"]) == {"epochs", "lr", "augment"}
    assert any("percentage points" in c.value for c in at.caption)


def test_old_run_without_per_class_says_not_recorded(root):
    edit_run_json(root / "r18-b", val_per_class=...)
    at = _select(_open(), "r18-a", "r18-b")
    assert any("not recorded for r18-b" in i.value for i in at.info)
    per_class = next(d.value for d in at.dataframe if "class" in d.value.columns)
    assert list(per_class.columns) == ["class", "r18-a", "n r18-a"]


def test_rename_and_note(root):
    at = _select(_open(), "r18-a")
    assert [h.value for h in at.header] == ["Run r18-a", "Manage"]
    at.text_input(key="rename_r18-a").set_value("bad name!")
    app_ok(_button(at, "Rename").click().run())
    assert any("Not renamed" in e.value and "invalid run name" in e.value for e in at.error)
    at.text_input(key="rename_r18-a").set_value("r18-best")
    app_ok(_button(at, "Rename").click().run())
    assert any("Renamed r18-a to r18-best" in s.value for s in at.success)
    assert (root / "r18-best" / RUN_JSON).is_file() and not (root / "r18-a").exists()
    assert at.multiselect(key="runs_selected").value == ["r18-best"]
    assert "r18-best" in list(at.dataframe[0].value["name"])
    at.text_area(key="note_r18-best").set_value("lower lr, more epochs")
    app_ok(_button(at, "Save note").click().run())
    assert load_run(root / "r18-best").info["note"] == "lower lr, more epochs"
    assert "lower lr, more epochs" in list(at.dataframe[0].value["note"])


def test_delete_asks_for_confirmation(root):
    at = _select(_open(), "r18-b")
    app_ok(_button(at, "Delete run...").click().run())
    assert any("for good" in w.value for w in at.warning)
    app_ok(_button(at, "Cancel").click().run())
    assert (root / "r18-b").is_dir() and not any("for good" in w.value for w in at.warning)
    app_ok(_button(at, "Delete run...").click().run())
    app_ok(_button(at, "Yes, delete r18-b").click().run())
    assert not (root / "r18-b").exists()
    assert any("Deleted run r18-b" in s.value for s in at.success)
    assert list(at.dataframe[0].value["name"]) == ["r18-a"]
    assert at.multiselect(key="runs_selected").value == []


def test_running_run_is_never_deleted_or_renamed(root):
    # This test process stands in for the trainer: alive, so the run is "running".
    edit_run_json(root / "r18-b", status="running", ended=None, process=process_identity())
    at = _select(_open(), "r18-b")
    assert "running" in set(at.dataframe[0].value["status"])
    assert any("this page redraws itself" in c.value for c in at.caption)
    app_ok(_button(at, "Delete run...").click().run())
    assert any("is running and cannot be deleted" in e.value for e in at.error)
    assert not any("for good" in w.value for w in at.warning)
    assert (root / "r18-b" / RUN_JSON).is_file()
    at.text_input(key="rename_r18-b").set_value("other")
    app_ok(_button(at, "Rename").click().run())
    assert any("is running" in e.value for e in at.error)
    assert (root / "r18-b").is_dir()


def test_interrupted_run_is_explained_and_still_usable(root):
    edit_run_json(root / "r18-b", status="running", ended=None, process=dead_process())
    at = _select(_open(), "r18-b")
    assert at.dataframe[0].value.set_index("name").loc["r18-b", "status"] == "interrupted"
    assert any("Interrupted" in i.value and "checkpoint is still loadable" in i.value for i in at.info)
    assert any("training process is gone" in w.value for w in at.warning)
    links = {link.proto.label: parse_qs(link.proto.query_string) for link in at.get("page_link")}
    assert links["Evaluate r18-b"]["run"] == ["r18-b"]
    assert links["Evaluate r18-b"]["data"][0].endswith("five-runs/val")
    assert links["Use r18-b on Predict"]["run"] == ["r18-b"]
    # and deleting it is allowed (its process is gone), after the confirmation
    app_ok(_button(at, "Delete run...").click().run())
    assert any("for good" in w.value for w in at.warning)


def test_damaged_run_shows_its_error(root):
    (root / "torn").mkdir()
    (root / "torn" / RUN_JSON).write_text('{"status": "fini')
    at = _select(_open(), "torn")
    assert at.dataframe[0].value.set_index("name").loc["torn", "status"] == "damaged"
    assert any("run.json cannot be read" in e.value for e in at.error)
    app_ok(_button(at, "Save note").click().run())
    assert any("Note not saved" in e.value for e in at.error)
