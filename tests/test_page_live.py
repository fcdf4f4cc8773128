"""The Live camera page through Streamlit's AppTest: controls, the ICE servers setting and the
fallback message. (AppTest has no WebRTC: the video itself is tested in a real browser,
tests/browser/test_live_page.py.)"""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.live import LiveProcessor
from tests.conftest import ROOT

PAGE = str(ROOT / "pages" / "live.py")


def test_controls_configure_the_session_processor(monkeypatch):
    monkeypatch.delenv("FACELAB_ICE_SERVERS", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    assert [s.label for s in at.slider] == ["Detect faces every N frames", "Smallest face (pixels)"]
    assert not at.warning
    at.slider[0].set_value(5).run()
    processor = at.session_state["facelab_live_processor"]
    assert isinstance(processor, LiveProcessor)
    assert processor.settings.detect_every == 5 and processor.settings.label_gender
    # No camera stream under AppTest: a clear message, not a stack trace; the photo fallback stays.
    assert not at.exception
    assert any("live video cannot start" in e.value for e in at.error)
    assert any(t.label == "Take a single photo instead" for t in at.toggle)


def test_bad_ice_servers_setting_is_explained(monkeypatch):
    monkeypatch.setenv("FACELAB_ICE_SERVERS", "stun:stun.example.org")
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    assert not at.exception
    assert any("FACELAB_ICE_SERVERS must be a JSON list" in w.value for w in at.warning)


def test_the_session_gallery_is_the_default_identity(face_data, tmp_path):
    from core.gallery import enrol_folder

    people = tmp_path / "people"
    for person in ("madonna", "elton_john"):
        (people / person).mkdir(parents=True)
        photo = sorted((face_data / "five_celeb" / "train" / person).iterdir())[0]
        (people / person / photo.name).symlink_to(photo)
    gallery, _ = enrol_folder(people)
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["facelab_gallery"] = gallery
    at.run()
    assert not at.exception
    assert at.selectbox[0].value == "gallery"
    assert "2 people" in at.selectbox[0].format_func(at.selectbox[0].value)
    processor = at.session_state["facelab_live_processor"]
    assert processor.identity is gallery
    at.selectbox[0].set_value("none").run()
    assert at.session_state["facelab_live_processor"].identity is None
