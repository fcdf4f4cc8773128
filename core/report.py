"""Exports: per-face prediction tables (CSV) and a self-contained HTML evaluation report.

    from core.report import prediction_rows, html_report
    rows = prediction_rows(core.predict.predict_photos(...))      # -> list of flat dicts (CSV)
    html = html_report(core.evaluate.evaluate_run(...), error_crops={file: crop, ...})

The HTML report needs no network and no files next to it: the confusion matrix is an HTML table
with inline colours, and the error thumbnails are base64 PNGs, so it can be mailed or archived
as one file.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

# Largest confusion matrix drawn in the report; more classes are cut to the most confused ones
# (core.evaluation.reorder_confusion), since a 100x100 table is unreadable.
MAX_MATRIX_CLASSES = 30
THUMB_SIDE = 96


# -- prediction table (Predict page, CLI) ------------------------------------------------------------

def prediction_rows(results: Sequence[Mapping[str, Any]],
                    thresholds: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
    """One flat row per (photo, face, model) from ``core.predict.predict_photos`` results.

    Args:
        results: the per-image dicts of ``predict_photos``.
        thresholds: ``{model: threshold}`` to re-decide "recognised" with (see
            :func:`recognised`); models not named keep the decision in the results.

    Returns:
        Rows with ``file, face, x1, y1, x2, y2, detection_confidence, model, label,
        score, kind, recognised, top_k`` (``top_k`` as "name:score; ..."); a photo that could
        not be read or holds no face gets one row with ``error``/``message``.
    """
    thresholds = dict(thresholds or {})
    rows: list[dict[str, Any]] = []
    for result in results:
        base = {"file": result.get("file")}
        faces = result.get("faces") or []
        if "error" in result or not faces:
            rows.append({**base, "face": None, "error": result.get("error"),
                         "message": result.get("message")})
            continue
        for index, face in enumerate(faces, start=1):
            box = face.get("box") or [None] * 4
            face_row = {**base, "face": index, "x1": _r(box[0]), "y1": _r(box[1]), "x2": _r(box[2]),
                        "y2": _r(box[3]), "detection_confidence": _r(face.get("confidence"), 4)}
            predictions = face.get("predictions") or {}
            if not predictions:
                rows.append(face_row)
            for model, pred in predictions.items():
                if "error" in pred:
                    rows.append({**face_row, "model": model, "error": pred["error"]})
                    continue
                top = pred.get("top") or []
                ok = recognised(pred, thresholds.get(model))
                rows.append({**face_row, "model": model,
                             "label": top[0]["label"] if top and ok else None,
                             "best_match": top[0]["label"] if top else None,
                             "score": top[0]["prob"] if top else None,
                             "kind": pred.get("kind"), "recognised": ok,
                             "top_k": "; ".join(f"{t['label']}:{t['prob']:.4f}" for t in top),
                             **({"age": _r(pred["age"], 1)} if pred.get("age") is not None else {})})
    return rows


def recognised(pred: Mapping[str, Any], threshold: float | None) -> bool:
    """Whether a face's prediction passes ``threshold`` (``None``: the decision already made).

    Galleries and embedding runs compare their similarity ``score``; plain classifiers compare
    the top probability (a "not sure" floor), as ``core.predict`` does.
    """
    if threshold is None:
        return bool(pred.get("recognised", True))
    if pred.get("score") is not None:
        return float(pred["score"]) >= threshold
    top = pred.get("top") or []
    return bool(top) and float(top[0]["prob"]) >= threshold


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as CSV text; the columns are the union of the keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _r(value: Any, digits: int = 1) -> Any:
    return None if value is None else round(float(value), digits)


# -- HTML report (Evaluate page) ---------------------------------------------------------------------

def image_data_uri(image: np.ndarray, side: int = THUMB_SIDE, image_format: str = "PNG") -> str:
    """A uint8 RGB image as a ``data:image/<format>;base64,...`` URI, shrunk to ``side`` pixels.
    PNG for the report (lossless, a few dozen thumbnails); JPEG where there is one per point of
    a chart (about a sixth of the bytes)."""
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "PNG":
        pil.save(buffer, format="PNG", optimize=True)
    elif image_format == "JPEG":
        pil.save(buffer, format="JPEG", quality=80)
    else:
        raise ValueError(f"unknown image format {image_format!r}: use 'PNG' or 'JPEG'")
    mime = image_format.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(image: np.ndarray, side: int = THUMB_SIDE) -> str:
    return image_data_uri(image, side, "PNG")


def _fmt(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _short(path: str, limit: int = 28) -> str:
    """The file's name, cut in the middle when long (web-scraped names run to 100+ characters)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= limit else f"{name[:limit // 2 - 1]}...{name[-(limit // 2 - 2):]}"


def _cell_colour(fraction: float) -> str:
    # White to a saturated blue; text turns white on dark cells (readable when printed too).
    fraction = min(max(fraction, 0.0), 1.0)
    r, g, b = (int(255 - (255 - c) * fraction) for c in (31, 96, 170))
    text = "#fff" if fraction > 0.55 else "#000"
    return f"background:rgb({r},{g},{b});color:{text}"


def _matrix_html(report: Mapping[str, Any]) -> str:
    from core.evaluation import reorder_confusion

    classes = report["classes"]
    counts = np.asarray(report["confusion"])
    top = MAX_MATRIX_CLASSES if len(classes) > MAX_MATRIX_CLASSES else None
    view = reorder_confusion(counts, classes, top=top) if top else {
        "classes": list(classes), "matrix": counts.tolist()}
    names = view["classes"]
    index = [classes.index(n) for n in names]
    sub = counts[np.ix_(index, index)]
    support = counts.sum(axis=1)[index]
    note = (f"<p class='note'>The {top} most confused of {len(classes)} classes.</p>" if top else "")
    head = "".join(f"<th class='rot'><div>{html.escape(n)}</div></th>" for n in names)
    body = []
    for name, row, total in zip(names, sub, support):
        cells = "".join(f"<td style='{_cell_colour(v / total if total else 0)}'>{int(v) or ''}</td>"
                        for v in row)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (note + "<table class='matrix'><tr><th>true &darr; / predicted &rarr;</th>" + head +
            "</tr>" + "".join(body) + "</table>")


def _table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table class='data'><tr>{head}</tr>{body}</table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:8px;padding:.6em 1.2em;min-width:8em}
.card .v{font-size:1.8em;font-weight:600} .card .k{color:#666}
table{border-collapse:collapse;margin:.5em 0 1.5em}
table.data td,table.data th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
table.data th{background:#f4f4f4}
table.matrix td{width:2.2em;height:2.2em;text-align:center;border:1px solid #eee;font-size:.85em}
table.matrix th{font-weight:normal;font-size:.85em;text-align:right;padding-right:.4em}
th.rot{height:8em;vertical-align:bottom} th.rot div{writing-mode:vertical-rl;transform:rotate(180deg)}
.errors{display:flex;flex-wrap:wrap;gap:.8em}
.errors figure{margin:0;width:110px;font-size:.75em;text-align:center;overflow-wrap:anywhere}
.errors .file{color:#888}
.errors img{width:96px;height:96px;object-fit:cover;border:2px solid #c62828}
.note{color:#666;font-size:.9em}
"""


def html_report(report: Mapping[str, Any], *, error_crops: Mapping[str, np.ndarray | None] | None = None,
                max_errors: int = 60, title: str | None = None) -> str:
    """A self-contained HTML page of an evaluation (``core.evaluate.evaluate_run``'s report).

    Args:
        report: the evaluation report (metrics, ``per_class``, ``confusion``, ``misclassified``).
        error_crops: ``{file: crop}`` of misclassified faces (e.g. from
            ``core.evaluate.report_crops``); those present are embedded as base64 thumbnails.
        max_errors: at most this many error thumbnails (most confident errors first).
        title: page title (default: "FaceLab evaluation: <run>").

    Returns:
        The HTML text (UTF-8), with no external references.
    """
    for key in ("classes", "confusion", "per_class", "accuracy", "n"):
        if key not in report:
            raise ValueError(f"not an evaluation report: {key!r} is missing (expected the output "
                             f"of core.evaluate.evaluate_run)")
    run = str(report.get("run") or "model")
    title = title or f"FaceLab evaluation: {run}"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = [("accuracy", report.get("accuracy")), ("top-5 accuracy", report.get("top5_accuracy")),
             ("macro F1", report.get("macro_f1")), ("faces (n)", report.get("n"))]
    if report.get("roc_auc") is not None:
        cards.append(("ROC AUC", report["roc_auc"]))
    open_set = report.get("open_set") or {}
    if open_set:
        cards += [("EER", open_set.get("eer")), ("TAR @ FAR 1%", open_set.get("tar_at_far_1e-2"))]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='sub'>data: {html.escape(str(report.get('data_dir', '')))} &middot; "
             f"task: {html.escape(str(report.get('task')))} &middot; {when}</p>",
             "<div class='cards'>" + "".join(
                 f"<div class='card'><div class='v'>{_fmt(v)}</div><div class='k'>{html.escape(k)}</div></div>"
                 for k, v in cards) + "</div>"]
    notes = []
    if report.get("no_face"):
        notes.append(f"{len(report['no_face'])} photo(s) had no face found; the whole image was used.")
    if report.get("errors"):
        notes.append(f"{len(report['errors'])} photo(s) could not be read and were left out.")
    if report.get("unknown_classes"):
        notes.append("Folders matching no class of the model (left out): " +
                     ", ".join(f"{u['class']} ({u['n']})" for u in report["unknown_classes"]))
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    parts += ["<h2>Confusion matrix</h2>", "<p class='note'>Rows: true class; columns: predicted; "
              "colour: fraction of the row.</p>", _matrix_html(report)]
    parts += ["<h2>Per class</h2>", _table_html(report["per_class"],
                                                ["class", "support", "accuracy", "precision", "recall", "f1"])]
    if report.get("confused_pairs"):
        parts += ["<h2>Most confused pairs</h2>", _table_html(report["confused_pairs"][:20],
                                                              ["true", "predicted", "count"])]
    errors = list(report.get("misclassified") or [])[:max_errors]
    if errors:
        crops = error_crops or {}
        figures = []
        for e in errors:
            crop = crops.get(e.get("file"))
            img = (f"<img src='{png_data_uri(crop)}' alt=''>" if crop is not None
                   else "<div class='note'>(no crop)</div>")
            conf = e.get("confidence")
            file = str(e.get("file") or "")
            figures.append(f"<figure>{img}<figcaption>{html.escape(str(e['true']))} &rarr; "
                           f"<b>{html.escape(str(e['predicted']))}</b>"
                           f"{f' ({conf:.2f})' if conf is not None else ''}<br>"
                           f"<span class='file' title='{html.escape(file, quote=True)}'>"
                           f"{html.escape(_short(file))}</span></figcaption></figure>")
        shown = len(errors)
        total = len(report.get("misclassified") or [])
        parts += [f"<h2>Errors ({shown} of {total}, most confident first)</h2>",
                  "<div class='errors'>" + "".join(figures) + "</div>"]
    parts.append("</body></html>")
    return "\n".join(parts)
