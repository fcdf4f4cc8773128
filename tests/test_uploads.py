"""Uploaded zips of class folders: real photos unpack under the cache; every unsafe or useless zip
is refused with a clear message and leaves nothing behind."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from core.uploads import (MAX_RATIO, UploadError, describe, list_uploads, save_upload,
                          uploads_root)
from tests.conftest import FIVE


def _photos(face_data: Path, person: str, count: int, split: str = "train") -> list[Path]:
    return sorted((face_data / "five_celeb" / split / person).iterdir())[:count]


def _zip(entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def _people_zip(face_data: Path, people=FIVE[:3], count: int = 3, prefix: str = "") -> bytes:
    return _zip({f"{prefix}{person}/{photo.name}": photo.read_bytes()
                 for person in people for photo in _photos(face_data, person, count)})


def _left_behind(cache_dir: Path) -> list[Path]:
    root = uploads_root(cache_dir)
    return list(root.iterdir()) if root.exists() else []


def test_real_photos_unpack_under_the_cache_with_a_report(face_data, cache_dir):
    photos = {f"people/{p}/{f.name}": f.read_bytes() for p in FIVE[:3]
              for f in _photos(face_data, p, 3)}
    junk = {"people/notes.txt": b"who is who", "people/madonna_list.csv": b"a,b\n",
            "__MACOSX/people/._x.jpg": b"\x00\x05", "people/ben_afflek/.DS_Store": b"\x00",
            # named like a photo but it is text: decoded, found wanting, skipped
            "people/elton_john/fake.jpg": b"This is not a JPEG."}
    data = _zip({**photos, **junk})
    report = save_upload(data, name="people.zip")

    assert report.classes == tuple(sorted(FIVE[:3]))
    assert report.counts == {p: 3 for p in FIVE[:3]}
    assert report.n_images == 9 and report.task == "identity" and not report.reused
    reasons = {s.name: s.reason for s in report.skipped}
    assert set(reasons) == set(junk)
    assert reasons["people/notes.txt"] == "not an image (.txt)"
    assert reasons["__MACOSX/people/._x.jpg"] == "system file"
    assert reasons["people/elton_john/fake.jpg"].startswith("not a readable image")
    # Under the cache folder only, with the wrapping folder seen through.
    assert report.root.is_relative_to(cache_dir / "uploads")
    assert report.root.name == "people"
    assert sorted(p.name for p in report.root.iterdir()) == sorted(FIVE[:3])
    assert not (report.root / "notes.txt").exists()
    assert (report.root / "ben_afflek" / _photos(face_data, "ben_afflek", 1)[0].name).read_bytes() \
        == _photos(face_data, "ben_afflek", 1)[0].read_bytes()
    assert describe(report) == "3 classes, 9 photos (5 file(s) skipped)"

    # The same zip again: found, not unpacked twice; and listed.
    again = save_upload(data, name="copy.zip")
    assert again.reused and again.root == report.root and again.name == "copy.zip"
    listed = list_uploads()
    assert [u.digest for u in listed] == [report.digest]


def test_train_val_layout_and_file_like_sources(face_data, cache_dir, tmp_path):
    entries = {f"{split}/{p}/{f.name}": f.read_bytes() for split, n in (("train", 3), ("val", 2))
               for p in FIVE[:2] for f in _photos(face_data, p, n, split)}
    path = tmp_path / "split.zip"
    path.write_bytes(_zip(entries))
    report = save_upload(path, name="split.zip")
    assert report.split_source == "folders" and report.counts == {p: 5 for p in FIVE[:2]}
    with open(path, "rb") as handle:  # a file object, as Streamlit hands uploads over
        assert save_upload(handle, name="split.zip").reused


@pytest.mark.parametrize("entry, why", [
    ("../evil/x.jpg", "'..' leads outside the folder"),
    ("people/../../x.jpg", "'..' leads outside the folder"),
    ("/etc/cron.d/x.jpg", "absolute path"),
    ("C:/Windows/x.jpg", "absolute path"),
    ("people\\..\\..\\x.jpg", "'..' leads outside the folder"),
])
def test_entries_escaping_the_folder_refuse_the_whole_zip(face_data, cache_dir, entry, why):
    buffer = io.BytesIO(_people_zip(face_data))
    with zipfile.ZipFile(buffer, "a") as zf:
        zf.writestr(entry, _photos(face_data, "madonna", 1)[0].read_bytes())
    with pytest.raises(UploadError) as error:
        save_upload(buffer.getvalue(), name="evil.zip")
    assert "evil.zip was refused" in str(error.value) and why in str(error.value)
    assert repr(entry) in str(error.value) and "Nothing was extracted" in str(error.value)
    assert _left_behind(cache_dir) == []
    assert not (cache_dir.parent / "evil").exists()


def test_symlink_entries_are_refused(face_data, cache_dir):
    buffer = io.BytesIO(_people_zip(face_data))
    data = _zip({}, symlinks={"people/ben_afflek/passwd.jpg": "/etc/passwd"})
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buffer, "a") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    with pytest.raises(UploadError, match="symbolic link"):
        save_upload(buffer.getvalue(), name="links.zip")
    assert _left_behind(cache_dir) == []


def test_zip_bomb_is_refused_before_inflating(face_data, cache_dir):
    entries = {f"{p}/{f.name}": f.read_bytes() for p in FIVE[:2] for f in _photos(face_data, p, 2)}
    entries["ben_afflek/huge.png"] = b"\x00" * (50 * 2**20)  # 50 MB of zeros deflate ~1000x
    data = _zip(entries)
    assert len(data) < 2**20
    with pytest.raises(UploadError, match=r"zip bomb") as error:
        save_upload(data, name="bomb.zip")
    assert "huge.png" in str(error.value) and f"{MAX_RATIO}" not in str(error.value)
    assert _left_behind(cache_dir) == []


@pytest.mark.parametrize("kind", ["zero_bytes", "no_entries", "only_folders", "not_a_zip"])
def test_empty_or_non_zip_uploads(cache_dir, kind):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        if kind == "only_folders":
            zf.writestr("people/", b"")
            zf.writestr("people/ben/", b"")
    data = {"zero_bytes": b"", "not_a_zip": b"PK? no, a shopping list"}.get(kind, buffer.getvalue())
    with pytest.raises(UploadError) as error:
        save_upload(data, name="x.zip")
    expected = {"zero_bytes": "x.zip is empty (0 bytes)", "not_a_zip": "x.zip is not a zip file",
                "no_entries": "x.zip is empty: it holds no files",
                "only_folders": "x.zip is empty: it holds no files"}[kind]
    assert str(error.value).startswith(expected)
    assert _left_behind(cache_dir) == []


def test_zip_of_text_files_is_refused_with_the_reasons(cache_dir):
    data = _zip({"people/ben/notes.txt": b"hello", "people/ann/todo.md": b"- eat",
                 "people/ann/photo.jpg": b"not really a photo",
                 "people/ben/photo.png": b"nor this"})
    with pytest.raises(UploadError) as error:
        save_upload(data, name="texts.zip")
    message = str(error.value)
    assert message.startswith("texts.zip holds no photos in class folders (4 file(s) skipped")
    assert "people/ann/photo.jpg (not a readable image" in message
    assert _left_behind(cache_dir) == []


def test_one_class_is_refused(face_data, cache_dir):
    with pytest.raises(UploadError, match=r"only one class folder \('madonna'\) with photos"):
        save_upload(_people_zip(face_data, people=("madonna",)), name="one.zip")
    # Photos loose at the top (no class folders) say where they should go.
    loose = _zip({f.name: f.read_bytes() for f in _photos(face_data, "madonna", 2)})
    with pytest.raises(UploadError, match="holds no photos in class folders"):
        save_upload(loose, name="loose.zip")
    assert _left_behind(cache_dir) == []


def test_a_class_too_small_to_split_is_explained_with_the_zip_name(face_data, cache_dir):
    entries = {f"{p}/{f.name}": f.read_bytes() for p in FIVE[:2] for f in _photos(face_data, p, 3)}
    entries["solo/one.jpg"] = _photos(face_data, "madonna", 1)[0].read_bytes()
    with pytest.raises(UploadError) as error:
        save_upload(_zip(entries), name="small.zip")
    assert "class 'solo'" in str(error.value) and "small.zip" in str(error.value)
    assert str(cache_dir) not in str(error.value)  # the temporary folder is not shown
    assert _left_behind(cache_dir) == []
