"""Datasets: discovery, splits, gender sources, clear errors, transforms, samplers, load_split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cache import CropCache, CropSettings
from core.data import (DatasetError, build_transforms, discover_dataset, load_split, make_sampler)
from core.data.loading import CropDataset


@pytest.fixture(scope="module")
def small_jpeg(tmp_path_factory) -> bytes:
    """A real photo (skimage's astronaut) as small JPEG bytes; discovery never decodes it."""
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "a.jpg"
    Image.fromarray(data.astronaut()).resize((64, 64)).save(path)
    return path.read_bytes()


def make_tree(root: Path, layout: dict[str, int], data: bytes) -> Path:
    """layout {"a": 3, "train/b": 2, "empty": 0} -> folders with that many photos."""
    root.mkdir(parents=True, exist_ok=True)
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / folder / f"{i:03d}.jpg").write_bytes(data + bytes([i % 256]))
    return root


# -- discovery on the real data -----------------------------------------------------------

def test_five_celeb_uses_its_folders(face_data):
    spec = discover_dataset(face_data / "five_celeb")
    assert spec.split_source == "folders" and spec.task == "identity"
    assert spec.classes == ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")
    assert len(spec.samples["train"]) == 93 and len(spec.samples["val"]) == 25
    assert spec.samples["test"] == ()
    assert all(p.parent.parent.name == "train" for p in spec.paths("train"))
    assert spec.counts()["val"] == {c: 5 for c in spec.classes}
    json.dumps(spec.summary())  # recordable with a run


def test_lfw40_seeded_split_is_stratified_and_reproducible(face_data):
    root = face_data / "lfw40"
    spec = discover_dataset(root, seed=3)
    assert spec.split_source == "seeded" and len(spec.classes) == 19  # SOURCE.txt is not a class
    sizes = {s: len(v) for s, v in spec.samples.items()}
    assert sum(sizes.values()) == 1867
    assert abs(sizes["train"] / 1867 - 0.8) < 0.02
    counts = spec.counts()
    assert all(counts[s][c] >= 1 for s in ("train", "val", "test") for c in spec.classes)
    sets = [set(spec.paths(s)) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    again = discover_dataset(root, seed=3)
    assert again.samples == spec.samples and again.fingerprint == spec.fingerprint
    other = discover_dataset(root, seed=4)
    assert other.samples["val"] != spec.samples["val"]
    assert other.fingerprint == spec.fingerprint  # the data did not change


def test_utkface_folders_are_a_gender_task(face_data):
    spec = discover_dataset(face_data / "utkface_gender")
    assert spec.task == "gender" and spec.classes == ("female", "male")


# -- layouts and errors on small folders ----------------------------------------------------

def test_fingerprint_changes_with_the_data(tmp_path, small_jpeg):
    root = make_tree(tmp_path / "d", {"a": 3, "b": 3}, small_jpeg)
    before = discover_dataset(root).fingerprint
    (root / "b" / "new.jpg").write_bytes(small_jpeg)
    assert discover_dataset(root).fingerprint != before


@pytest.mark.parametrize("layout, words", [
    ({}, "is empty"),
    ({"a": 4, "empty": 0}, "class folder 'empty'.*no images"),
    ({"only": 5}, "only one class .'only'."),
    ({"a": 5, "tiny": 2}, "class 'tiny'.* has 2 image.*at least 3"),
    ({"train/a": 2, "train/b": 2, "val/a": 1, "val/c": 1}, "not in train: c"),
    ({"male": 3, "female": 0}, "class folder 'female'"),
    ({"train/a": 3, "train/b": 3, "test/a": 1}, "no val/"),
])
def test_dataset_errors_name_the_problem(tmp_path, small_jpeg, layout, words):
    root = make_tree(tmp_path / "d", layout, small_jpeg)
    with pytest.raises(DatasetError, match=words):
        discover_dataset(root)


def test_other_errors(tmp_path, small_jpeg):
    with pytest.raises(DatasetError, match="not found"):
        discover_dataset(tmp_path / "nowhere")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "x.jpg").write_bytes(small_jpeg)
    with pytest.raises(DatasetError, match="1 image files lie directly"):
        discover_dataset(loose)
    root = make_tree(tmp_path / "d", {"a": 3, "b": 3}, small_jpeg)
    with pytest.raises(DatasetError, match="identity, gender"):
        discover_dataset(root, task="age")
    with pytest.raises(DatasetError, match="fractions"):
        discover_dataset(root, split=(0.5, 0.1, 0.1))
    with pytest.raises(DatasetError, match="male/ and female/"):
        discover_dataset(root, task="gender")


def test_tiny_classes_still_reach_every_split(tmp_path, small_jpeg):
    root = make_tree(tmp_path / "d", {"a": 3, "b": 4, "c": 30}, small_jpeg)
    spec = discover_dataset(root)
    assert all(n >= 1 for split in spec.counts().values() for n in split.values())
    two_way = discover_dataset(root, split=(0.5, 0.5))
    assert two_way.samples["test"] == () and len(two_way.samples["val"]) >= 3


def test_gender_from_json_map(tmp_path, small_jpeg):
    root = make_tree(tmp_path / "d", {"Ann": 3, "Bob": 3, "Cid": 3}, small_jpeg)
    assert discover_dataset(root).task == "identity"
    mapping = {"Ann": "female", "Bob": "M", "Cid": "male"}
    spec = discover_dataset(root, task="gender", gender_map=mapping)
    assert spec.classes == ("female", "male")
    assert sum(spec.counts()[s]["male"] for s in ("train", "val", "test")) == 6
    assert "photos were split" in spec.notes[0]  # two men, one woman: too few to split by person
    (root / "gender.json").write_text(json.dumps(mapping))
    assert discover_dataset(root, task="gender").samples == spec.samples
    with pytest.raises(DatasetError, match="no entry .* Cid"):
        discover_dataset(root, task="gender", gender_map={"Ann": "female", "Bob": "male"})
    with pytest.raises(DatasetError, match="'robot' not understood"):
        discover_dataset(root, task="gender", gender_map={**mapping, "Cid": "robot"})


def test_gender_from_celeba_attributes(tmp_path, small_jpeg):
    root = tmp_path / "celeba"
    make_tree(root, {"img_align_celeba": 8}, small_jpeg)
    names = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    lines = ["9", "5_o_Clock_Shadow Male Smiling"]
    lines += [f"{n} -1 {1 if i % 2 else -1} 1" for i, n in enumerate(names)]
    lines.append("999999.jpg -1 1 1")  # listed but absent: noted, not fatal
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    spec = discover_dataset(root)
    assert spec.task == "gender" and spec.classes == ("female", "male")
    assert spec.split_source == "seeded" and "1 of 9 files" in spec.notes[0]
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {0 if i < 4 else 1 if i < 6 else 2}" for i, n in enumerate(names)))
    spec = discover_dataset(root / "list_attr_celeba.txt")
    assert spec.split_source == "partition"
    assert [len(spec.samples[s]) for s in ("train", "val", "test")] == [4, 2, 2]


# -- transforms, samplers, datasets ----------------------------------------------------------

@pytest.mark.parametrize("augment", [False, True])
def test_transforms_shapes_and_dtypes(astronaut, augment):
    image = torch.from_numpy(astronaut[:160, 170:330]).permute(2, 0, 1).contiguous()
    out = build_transforms(64, augment=augment)(image)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and -3 < out.mean() < 3
    if not augment:  # deterministic
        assert torch.equal(out, build_transforms(64, augment=False)(image))


def test_weighted_sampler_balances_a_lopsided_set():
    labels = torch.tensor([0] * 90 + [1] * 10)
    sampler = make_sampler(labels, "weighted", seed=0, num_samples=4000)
    drawn = labels[list(sampler)]
    share = (drawn == 1).float().mean().item()
    assert 0.45 < share < 0.55


def test_cap_sampler_limits_each_class_and_varies():
    labels = torch.tensor([0] * 90 + [1] * 10 + [2] * 30)
    sampler = make_sampler(labels, "cap", cap=10, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 30
    assert torch.bincount(labels[first]).tolist() == [10, 10, 10]
    assert set(first) != set(second)  # a fresh draw of the large class each epoch
    assert make_sampler(labels, "none") is None
    assert len(make_sampler(labels, "cap")) == 30 + 10 + 30  # default cap: the median class size
    with pytest.raises(ValueError, match="none, weighted, cap"):
        make_sampler(labels, "oversample")


def test_crop_dataset_applies_transform():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    dataset = CropDataset(images, torch.tensor([0, 1, 0, 1]), build_transforms(24, augment=True))
    x, y = dataset[1]
    assert x.shape == (3, 24, 24) and y.item() == 1 and len(dataset) == 4
    with pytest.raises(ValueError, match="uint8"):
        CropDataset(images.float(), torch.zeros(4))


# -- load_split: crops from the cache, prepared on demand -------------------------------------

def test_load_split_prepares_and_reads_crops(astronaut, tmp_path):
    root = tmp_path / "people"
    for person, images in {"a": [astronaut, astronaut[:, ::-1]],
                           "b": [astronaut[:400, 50:450], astronaut[20:, :480]]}.items():
        (root / person).mkdir(parents=True)
        for i, image in enumerate(images):
            small = Image.fromarray(np.ascontiguousarray(image)).reduce(2)  # faster to detect
            small.save(root / person / f"{i}.jpg")
    (root / "b" / "broken.jpg").write_text("not a photo")
    spec = discover_dataset(root, split=(0.5, 0.5))
    cache = CropCache(settings=CropSettings(size=48))
    with pytest.raises(DatasetError, match="core.prepare"):
        load_split(spec, "train", cache, prepare_missing=False)
    with pytest.warns(UserWarning, match="unreadable"):
        data = [load_split(spec, s, cache) for s in ("train", "val")]
    images, labels, records = data[0]
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 48, 48)
    assert labels.dtype == torch.int64 and len(labels) == len(records) == len(images)
    total = sum(len(d.labels) for d in data)
    assert total == 4 and sum(len(d.skipped) for d in data) == 1
    assert all(r.n_faces >= 1 and not r.fallback for d in data for r in d.records)
    # Second time: straight from the cache, identical.
    again = load_split(spec, "train", cache, prepare_missing=False)
    assert torch.equal(again.images, images)


def test_gender_map_splits_by_person(tmp_path, small_jpeg):
    people = {f"w{i}": 2 + i for i in range(6)} | {f"m{i}": 3 + i for i in range(6)}
    root = make_tree(tmp_path / "d", people, small_jpeg)
    mapping = {name: "female" if name.startswith("w") else "male" for name in people}
    spec = discover_dataset(root, task="gender", gender_map=mapping, seed=1)
    assert spec.notes == ("split by person: nobody in val/test is in train",)
    owners = {s: {p.parent.name for p in spec.paths(s)} for s in ("train", "val", "test")}
    assert all(owners[s] for s in owners)
    assert not (owners["train"] & owners["val"] or owners["train"] & owners["test"]
                or owners["val"] & owners["test"])
    assert sum(len(v) for v in spec.samples.values()) == sum(people.values())
    assert all(n >= 1 for split in spec.counts().values() for n in split.values())
    assert discover_dataset(root, task="gender", gender_map=mapping, seed=1).samples == spec.samples
