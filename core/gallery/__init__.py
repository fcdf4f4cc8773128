"""An open-set gallery of known people for a face embedder: enrol, recognise, save, load.

    from core.gallery import Gallery, enrol_folder, enrol_photos
    gallery, report = enrol_folder("data/people")            # data/people/<name>/*.jpg
    gallery, _ = enrol_photos("Ann", uploads, gallery=gallery)
    gallery.identify(embeddings)   # [{"top": [{"label", "score"}], "label", "score", "recognised"}]
    gallery.save("people.npz"); Gallery.load("people.npz")

``store`` holds the immutable :class:`Gallery` and its file format; ``enrol`` turns photos into
embeddings through the crop and embedding caches.
"""
from __future__ import annotations

from core.gallery.enrol import (Embedder, class_folders, embed_files, embedder_key, enrol_folder,
                                enrol_photos, get_embedder, run_gallery)
from core.gallery.store import (DEFAULT_THRESHOLDS, EMBEDDERS, GALLERY_VERSION, MODES, Gallery,
                                GalleryError)

__all__ = [
    "DEFAULT_THRESHOLDS", "EMBEDDERS", "Embedder", "GALLERY_VERSION", "Gallery", "GalleryError",
    "MODES", "class_folders", "embed_files", "embedder_key", "enrol_folder", "enrol_photos",
    "get_embedder", "run_gallery",
]
