"""The Dataset page through Streamlit's AppTest: the empty state, the five_celeb default with
counts, charts and thumbnails, clear messages for folders that are not datasets, and the
prepare step with coverage and suspects on a small doctored copy of five_celeb."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, app_ok

PAGE = str(ROOT / "pages" / "dataset.py")
TIMEOUT = 900  # the prepare test detects and embeds ~14 photos on a busy 2-core machine


def _plain(elements) -> list[str]:
    """Texts as shown: the page backslash-escapes markdown characters in paths and messages."""
    return [e.value.replace("\\", "") for e in elements]


def _open(folder=None) -> AppTest:
    at = app_ok(AppTest.from_file(PAGE, default_timeout=TIMEOUT).run())
    if folder is not None:
        at.text_input(key="dataset_dir").set_value(str(folder))
        app_ok(at.run())
    return at


def test_router_lists_the_page_and_its_empty_state(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_DATA_DIR", str(tmp_path))  # no five_celeb there: nothing to prefill
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    app_ok(at.run())
    at.switch_page("pages/dataset.py")
    app_ok(at.run())
    assert [t.value for t in at.title] == ["Dataset"]
    assert at.text_input(key="dataset_dir").value == ""
    assert any("Type the path of a dataset folder" in i.value for i in at.info)
    assert not at.error and not at.metric


def test_five_celeb_counts_charts_and_thumbnails(face_data, monkeypatch):
    monkeypatch.setenv("FACE_DATA_DIR", str(face_data))
    at = _open()
    assert at.text_input(key="dataset_dir").value == str(face_data / "five_celeb")
    cards = {m.label: m.value for m in at.metric}
    assert cards == {"Photos": "118", "Classes": "5", "Split": "folders", "Task": "identity"}
    assert not at.warning and not at.error
    assert len(at.get("plotly_chart")) == 2  # class counts, image sizes
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == 12 and all(c.startswith("train/ben_afflek/") or
                                       c.startswith("val/ben_afflek/") for c in captions)
    at.selectbox(key="sample_class").set_value("madonna")
    app_ok(at.run())
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == 12 and all("/madonna/" in c for c in captions)
    # Nothing is detected until Prepare is pressed.
    assert any(b.label.startswith("Prepare") for b in at.button)
    assert not any(m.label == "Faces found" for m in at.metric)


def test_folders_that_are_not_datasets_say_why(tmp_path, face_data):
    photo = next((face_data / "five_celeb" / "train" / "madonna").iterdir())
    at = _open(tmp_path / "nowhere")
    assert _plain(at.error) == \
        [f"Not a usable dataset: dataset folder not found: {tmp_path / 'nowhere'}"]
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.jpg").symlink_to(photo)
    at.text_input(key="dataset_dir").set_value(str(tmp_path / "loose"))
    app_ok(at.run())
    assert len(at.error) == 1 and "has no class folders" in _plain(at.error)[0]
    for i in range(3):
        (tmp_path / "one" / "madonna").mkdir(parents=True, exist_ok=True)
        (tmp_path / "one" / "madonna" / f"{i}.jpg").symlink_to(photo)
    at.text_input(key="dataset_dir").set_value(str(tmp_path / "one"))
    app_ok(at.run())
    assert len(at.error) == 1 and "only one class ('madonna')" in _plain(at.error)[0]
    (tmp_path / "one" / "nobody").mkdir()
    app_ok(at.run())
    assert len(at.error) == 1 and "class folder 'nobody'" in _plain(at.error)[0]
    assert "has no images" in _plain(at.error)[0] and not at.metric


def faulty_dataset(face_data: Path, root: Path) -> Path:
    """ben_afflek and madonna, 5 photos each (symlinks), with an exact copy, a ben photo filed
    under madonna, a plain colour image (no face) and a text file named .jpg."""
    source = face_data / "five_celeb" / "train"
    for person in ("ben_afflek", "madonna"):
        (root / person).mkdir(parents=True)
        for photo in sorted((source / person).iterdir())[:5]:
            (root / person / photo.name).symlink_to(photo)
    shutil.copyfile(sorted((source / "madonna").iterdir())[0], root / "madonna" / "copy.jpg")
    (root / "madonna" / "ben.jpg").symlink_to(sorted((source / "ben_afflek").iterdir())[8])
    Image.new("RGB", (200, 260), (200, 40, 40)).save(root / "ben_afflek" / "red.png")
    (root / "ben_afflek" / "list.jpg").write_text("not a photo")
    return root


@pytest.fixture
def small(face_data, tmp_path):
    return faulty_dataset(face_data, tmp_path / "small")


def test_prepare_shows_coverage_and_suspects(small):
    at = _open(small)
    assert any("fewer than 10 photos: ben_afflek (7)" in w for w in _plain(at.warning))
    assert any("cannot be read as images, e.g. list.jpg" in w for w in _plain(at.warning))
    next(b for b in at.button if b.label.startswith("Prepare")).click()
    app_ok(at.run())
    cards = {m.label: m.value for m in at.metric}
    assert cards["Photos"] == "14"
    assert cards["Whole-image fallbacks"] == "1" and cards["Unreadable"] == "1"
    assert int(cards["Faces found"]) == 12
    tabs = [t.label for t in at.tabs]
    assert "Faces found (12)" in tabs and "Whole-image fallbacks (1)" in tabs
    assert "Unreadable (1)" in tabs and "Exact duplicates (1)" in tabs
    assert any(t.startswith("Possible mislabels (") and t != "Possible mislabels (0)" for t in tabs)
    text = " ".join(_plain(at.markdown))
    assert "**2 identical files**" in text
    assert "**madonna/ben.jpg** (" in text and "sits closer to **ben_afflek**" in text
    captions = [c for image in at.image for c in image.captions]
    assert "labelled madonna" in captions and "a ben_afflek face" in captions
    # A rerun (a slider moved) reuses the cached crops and embeddings.
    at.slider[0].set_value(0.4)
    app_ok(at.run())
    tabs = [t.label for t in at.tabs]
    assert "Exact duplicates (1)" in tabs and not any(e for e in at.error)
    # Another session (a reload, a second tab) sees the coverage without pressing Prepare.
    other = _open(small)
    assert {m.label: m.value for m in other.metric}["Faces found"] == "12"


def test_an_uploaded_zip_can_be_chosen(face_data, tmp_path):
    import io
    import zipfile

    uploads = pytest.importorskip("core.uploads")
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        for person in ("ben_afflek", "madonna"):
            for photo in sorted((face_data / "five_celeb" / "train" / person).iterdir())[:3]:
                zf.write(photo, f"{person}/{photo.name}")
    report = uploads.save_upload(data.getvalue(), name="people.zip")
    at = _open()
    box = at.selectbox[0]
    assert box.label == "Uploaded dataset"
    option = next(o for o in box.options if o.startswith("people.zip"))
    box.set_value(option)
    app_ok(at.run())
    assert at.text_input(key="dataset_dir").value == str(report.root)
    assert {m.label: m.value for m in at.metric}["Photos"] == "6"
