"""The dashboard through Streamlit's AppTest: the router, the Detect page, good and bad uploads.

AppTest runs the scripts in-process (no server, no browser); tests/browser covers what only a
real browser shows.
"""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "streamlit_app.py")
# The first run imports torch and loads the detector; AppTest's default (3 s) is too short on a
# 2-core machine.
TIMEOUT = 120


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader[0].set_value(list(files)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_router_opens_the_detect_page_with_instructions():
    at = _app()
    assert [t.value for t in at.title] == ["Detect faces"]
    assert any("Upload one or more photos" in info.value for info in at.info)
    assert len(at.file_uploader) == 1 and at.file_uploader[0].accept_multiple_files
    assert not at.error
    assert any(c.value.startswith("Device: ") for c in at.sidebar.caption)


@pytest.mark.parametrize("page, title", [("pages/predict.py", "Predict"),
                                         ("pages/live.py", "Live camera"),
                                         ("pages/evaluate.py", "Evaluate"),
                                         ("pages/dataset.py", "Dataset"),
                                         ("pages/train.py", "Train"),
                                         ("pages/runs.py", "Runs")])
def test_router_reaches_every_page(page, title):
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert title in [t.value for t in at.title]


def test_settings_have_the_detector_defaults():
    at = _app()
    values = {s.label: s.value for s in at.slider}
    assert values["Minimum face size (pixels)"] == 20
    assert values["Pyramid scale factor"] == pytest.approx(0.709)
    assert [values[f"Stage {n} ({net}) threshold"]
            for n, net in ((1, "PNet"), (2, "RNet"), (3, "ONet"))] == pytest.approx([0.6, 0.7, 0.8])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height``: what a decompression bomb looks like
    to a reader before it decodes (without needing the memory to build a real one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_bad_files_give_clear_errors():
    at = _upload(_app(),
                 ("notes.jpg", b"these are my notes, not a photo\n", "image/jpeg"),
                 ("empty.png", b"", "image/png"),
                 ("huge.png", _png_header_only(30_000, 20_000), "image/png"))
    errors = [e.value for e in at.error]
    assert len(errors) == 3, errors
    assert errors[0].startswith("notes.jpg: ") and "not an image" in errors[0]
    assert errors[1].startswith("empty.png: ") and "empty" in errors[1]
    assert errors[2].startswith("huge.png: ") and "too large" in errors[2]


def test_photo_shows_its_face_next_to_a_bad_file(astronaut):
    """One real face (skimage's astronaut): boxed photo + 1 aligned crop; the bad file errors."""
    at = _upload(_app(),
                 ("notes.jpg", b"not a photo", "image/jpeg"),
                 ("astronaut.png", _png(astronaut), "image/png"))
    assert len(at.error) == 1 and "notes.jpg" in at.error[0].value
    assert any(m.value == "**1 face found**" for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    face_captions = [c for c in captions if c.startswith("Face ")]
    assert len(face_captions) == 1 and face_captions[0].startswith("Face 1: 0.99"), \
        captions
    assert "512x512 pixels" in captions
    assert not [i.value for i in at.info if "No face found" in i.value]


def test_photo_without_a_face_says_so(astronaut):
    # A patch of the astronaut's suit: real photo content, no face.
    at = _upload(_app(), ("suit.png", _png(astronaut[300:480, 20:200].copy()), "image/png"))
    assert not at.error
    assert any("No face found in suit.png" in i.value for i in at.info)
