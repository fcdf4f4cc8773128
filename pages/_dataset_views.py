"""The Dataset page's sections (imported by pages/dataset.py; not a page itself: the router lists
its pages explicitly).

Images shown here are cached per file and dataset fingerprint, so a rerun (a class picked, a
page turned, a slider moved) reads nothing from disk twice.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from core.cache import CropCache
from core.data.insights import TINY_CLASS, face_crops, photo_with_faces, thumbnail
from core.images import ImageError

PER_PAGE = 24        # thumbnails per page of a coverage list
PER_ROW = 6
SPLIT_COLOURS = {"train": "#1f6fb4", "val": "#7fb8e6", "test": "#f2a541"}  # test is not an error
MAX_SUSPECTS = 20    # groups/pairs/photos drawn per suspect kind; all are in the tables


@st.cache_data(max_entries=2048, show_spinner=False)
def thumb(path: str, stamp: str, side: int = 256):
    """A photo's thumbnail, or the reason it cannot be shown (``stamp``: dataset fingerprint)."""
    try:
        return thumbnail(path, max_side=side)
    except ImageError as exc:
        return str(exc)


@st.cache_data(max_entries=256, show_spinner=False)
def crops(paths: tuple, stamp: str) -> list:
    return face_crops(list(paths), CropCache())


@st.cache_data(max_entries=256, show_spinner=False)
def boxed(path: str, stamp: str):
    try:
        return photo_with_faces(path, CropCache(), max_side=360)
    except ImageError as exc:
        return str(exc)


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_<>[]$#|~"})


def md(text: str) -> str:
    """Text shown literally in Streamlit's markdown: paths and messages hold ``<class>``,
    ``*.jpg`` and underscores, which would otherwise become tags, italics or maths."""
    return str(text).translate(_MARKDOWN)


def short(path: str, root: str) -> str:
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return Path(path).name
    name = rel.name if len(rel.name) <= 28 else rel.name[:12] + "..." + rel.name[-12:]
    return str(rel.parent / name)


def grid(images: list, captions: list[str], per_row: int = PER_ROW) -> None:
    """Images (arrays, or a message string for one that cannot be shown) in rows."""
    for start in range(0, len(images), per_row):
        cells = st.columns(per_row)
        for cell, image, caption in zip(cells, images[start:start + per_row],
                                        captions[start:start + per_row]):
            if isinstance(image, str) or image is None:
                cell.warning(md(f"{caption}: {image or 'no longer in the crop cache'}"))
            else:
                cell.image(image, caption=caption, width="stretch")


def class_chart(overview) -> None:
    rows = [{"class": c, "split": s, "photos": n} for s, per in overview.counts.items()
            for c, n in per.items()]
    frame = pd.DataFrame(rows)
    many = len(overview.classes) > 25
    fig = px.bar(frame, x="photos" if many else "class", y="class" if many else "photos",
                 color="split", orientation="h" if many else "v", barmode="stack",
                 height=max(320, 18 * len(overview.classes) + 120) if many else 360,
                 category_orders={"class": overview.classes, "split": list(SPLIT_COLOURS)},
                 color_discrete_map=SPLIT_COLOURS)
    line = dict(line_dash="dot", line_color="grey", annotation_text=f"{TINY_CLASS} photos")
    if many:
        fig.add_vline(x=TINY_CLASS, **line)
    else:
        fig.add_hline(y=TINY_CLASS, **line)
    fig.update_layout(margin=dict(t=20, b=10), legend_title_text="split")
    st.plotly_chart(fig, width="stretch")


def size_chart(overview) -> None:
    frame = pd.DataFrame(overview.sizes)
    if frame.empty:
        st.info("No readable image sizes.")
        return
    frame["name"] = [Path(f).name for f in frame["file"]]
    fig = px.scatter(frame, x="width", y="height", color="class", hover_name="name",
                     marginal_x="histogram", marginal_y="histogram", opacity=0.7, height=440)
    fig.update_layout(margin=dict(t=20, b=10))
    st.plotly_chart(fig, width="stretch")
    st.caption(f"Width x height in pixels as stored (median {int(frame['width'].median())} x "
               f"{int(frame['height'].median())}); the prepare step crops every face to the "
               f"same size, so this matters only for tiny or huge photos.")


def paged(items: list, key: str) -> list:
    pages = max(1, -(-len(items) // PER_PAGE))
    if pages == 1:
        return items
    page = st.number_input(f"Page (of {pages}, {PER_PAGE} per page)", 1, pages, 1, key=key)
    return items[(page - 1) * PER_PAGE:page * PER_PAGE]


def coverage_tabs(coverage, root: str, stamp: str) -> None:
    names = [f"Faces found ({len(coverage.faces)})", f"Several faces ({len(coverage.multi_face)})",
             f"Whole-image fallbacks ({len(coverage.fallback)})",
             f"Unreadable ({len(coverage.unreadable)})"]
    faces, multi, fallback, unreadable = st.tabs(names)
    with faces:
        st.caption("The aligned crop of each photo's face (the largest one when there are several): "
                   "what training sees.")
        shown = paged(coverage.faces, "page_faces")
        grid(crops(tuple(shown), stamp), [short(p, root) for p in shown])
    with multi:
        if not coverage.multi_face:
            st.success("No photo holds more than one face.")
        st.caption("Every face found is boxed; the one labelled 'crop' is what training uses. "
                   "If it is the wrong person, crop the photo or remove it.")
        shown = paged(coverage.multi_face, "page_multi")
        grid([boxed(p, stamp) for p in shown], [short(p, root) for p in shown], per_row=4)
    with fallback:
        if not coverage.fallback:
            st.success("A face was found in every readable photo.")
        st.caption("No face was found: the whole image is used as the crop (fine for photos that "
                   "are already tight face crops; otherwise the photo teaches the model nothing).")
        shown = paged(coverage.fallback, "page_fallback")
        grid([thumb(p, stamp) for p in shown], [short(p, root) for p in shown])
    with unreadable:
        if not coverage.unreadable:
            st.success("Every photo could be read.")
        else:
            st.caption("These files are left out of training.")
            st.dataframe(pd.DataFrame([{"file": short(e["file"], root), "reason": e["error"]}
                                       for e in coverage.unreadable]), hide_index=True)


def _flags(flags: list[str]) -> str:
    return "".join(f" :orange[**{md(f)}**]" for f in flags)


def suspects_view(s, root: str, stamp: str) -> None:
    exact, near, mislabels = st.tabs([f"Exact duplicates ({len(s.exact_duplicates)})",
                                      f"Near duplicates ({len(s.near_duplicates)})",
                                      f"Possible mislabels ({len(s.mislabels)})"])
    with exact:
        if not s.exact_duplicates:
            st.success("No two files have the same content.")
        for group in s.exact_duplicates[:MAX_SUSPECTS]:
            st.markdown(f"**{len(group['files'])} identical files**{_flags(group['flags'])}")
            grid([thumb(f, stamp, 200) for f in group["files"]],
                 [short(f, root) for f in group["files"]])
    with near:
        st.caption(f"Pairs of different files whose faces are closer than {s.threshold:.2f} "
                   f"(dlib embedding distance; photos of the same person are usually 0.2-0.5 "
                   f"apart, different people above 0.4).")
        if not s.near_duplicates:
            st.success("No near duplicates at this distance.")
        for pair in s.near_duplicates[:MAX_SUSPECTS]:
            left, right, text = st.columns([1, 1, 2])
            a, b = crops((pair["a"], pair["b"]), stamp)
            for cell, image, path in ((left, a, pair["a"]), (right, b, pair["b"])):
                if image is not None:
                    cell.image(image, caption=short(path, root), width="stretch")
            text.markdown(f"distance **{pair['distance']:.3f}**{_flags(pair['flags'])}")
    with mislabels:
        st.caption("Faces closer to another class than to their own (by class centre, or most "
                   "of their 5 nearest faces). Margin = distance to own centre - distance to "
                   "the other centre: above 0 means closer to the other class.")
        if not s.mislabels:
            st.success("Every face sits closest to its own class.")
        for m in s.mislabels[:MAX_SUSPECTS]:
            left, right, text = st.columns([1, 1, 2])
            own, other = crops((m["file"], m["example"]), stamp)
            if own is not None:
                left.image(own, caption=f"labelled {m['label']}", width="stretch")
            if other is not None:
                right.image(other, caption=f"a {m['closer_to']} face", width="stretch")
            votes = ", ".join(f"{c} {n}" for c, n in m["neighbours"].items())
            why = {"centre": "by class centre", "neighbours": "most of its nearest faces",
                   "centre and neighbours": "by class centre and most of its nearest faces"}
            text.markdown(f"**{md(short(m['file'], root))}** ({m['split']}): labelled "
                          f"**{md(m['label'])}**, sits closer to **{md(m['closer_to'])}** "
                          f"({why.get(m['reason'], m['reason'])})  \n"
                          f"margin {m['margin'] + 0.0:+.3f} (own centre {m['own_distance']:.3f}, "
                          f"{md(m['closer_to'])} centre {m['other_distance']:.3f}); nearest "
                          f"faces: {md(votes)}")
    for note in s.notes:
        st.caption(md(note))
