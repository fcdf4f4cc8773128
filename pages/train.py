"""Train page: choose a dataset (a server folder or an uploaded zip) and the options -> Launch a
background ``core.train`` run -> watch its progress, curves and learning rate live -> Stop, or,
when it ends, open it on Evaluate or Predict.

The run lives in the runs store, not in this script: the page shows the active run found there
(or the one named by ``?run=``), so a reload, a second tab or a server restart finds it again.
"""
from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server


from core.config import BALANCE_CHOICES, HEADS, OPTIMIZERS, SCHEDULERS, TASK_CHOICES, TrainConfig
from core.launcher import LaunchError, active_run, form_defaults, launch, run_state, stop_run
from core.runs import RunError, load_run
from core.uploads import UploadError, describe, list_uploads, save_upload

POLL_SECONDS = 1.5
COLOURS = {"train": "#1f77b4", "val": "#ff7f0e"}
SOURCES = ("Folder on the server", "Upload a zip", "Uploaded before")


@st.cache_resource(show_spinner=False)
def _device() -> tuple[str, int]:
    import torch

    from core.device import describe_device

    return describe_device(), torch.cuda.device_count()


@st.cache_data(show_spinner=False)
def _architectures() -> list[str]:
    from core.models import list_models

    return list(list_models())


@st.cache_data(ttl=30, show_spinner=False)
def _dataset_summary(folder: str, task: str) -> dict:
    from core.data import discover_dataset

    spec = discover_dataset(folder, task=None if task == "auto" else task)
    counts = {c: sum(s[c] for s in spec.counts().values()) for c in spec.classes}
    return {"task": spec.task, "counts": counts, "split": spec.split_source}


def _default_folder() -> str:
    data = Path(os.environ.get("FACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return str(data / "five_celeb") if (data / "five_celeb").is_dir() else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m {seconds % 60:02d}s"


def _curves(state: dict) -> None:
    history = state["history"]
    epochs = [row["epoch"] for row in history]
    # The whole run on the x axis when it is short; a long one grows as it goes (a 400-epoch
    # axis would squash the first epochs into a line at the left).
    total = state["epochs"] or 1
    upto = total if total <= 20 else min(total, max(len(epochs), state["epoch"]) + 1)
    left, right = st.columns(2)
    for column, metric, title in ((left, "loss", "Loss"), (right, "acc", "Accuracy")):
        fig = go.Figure()
        for split, dash in (("train", None), ("val", "dash")):
            fig.add_scatter(x=epochs, y=[row.get(f"{split}_{metric}") for row in history],
                            mode="lines+markers", name=split,
                            line={"dash": dash, "color": COLOURS[split]})
        if metric == "loss" and state["active"] and state["batches"]:
            # The running mean inside the current epochs: the curve moves between epoch points.
            fig.add_scatter(x=[b["x"] for b in state["batches"]],
                            y=[b["loss"] for b in state["batches"]], mode="lines",
                            name="train (running)",
                            line={"width": 1, "dash": "dot", "color": COLOURS["train"]})
        fig.update_layout(title=title, xaxis_title="epoch", height=300, margin={"t": 40, "b": 30},
                          xaxis={"range": [0.5, upto + 0.5]},
                          legend={"orientation": "h", "y": 1.15, "x": 1, "xanchor": "right"},
                          yaxis={"range": [0, 1.02]} if metric == "acc" else {})
        column.plotly_chart(fig, key=f"curve-{metric}")


def _show_state(state: dict) -> None:
    eta = "" if state["eta_seconds"] is None or not state["active"] else \
        f" - about {_duration(state['eta_seconds'])} left"
    st.progress(state["fraction"], text=f"{state['phase']}{eta}")
    last = state["last"] or {}
    cards = st.columns(5)
    cards[0].metric("Epoch", f"{state['epoch']}/{state['epochs'] or '?'}")
    cards[1].metric("Train loss", "-" if state["loss"] is None else f"{state['loss']:.4f}")
    cards[2].metric("Val accuracy", "-" if "val_acc" not in last else f"{last['val_acc']:.1%}")
    cards[3].metric("Learning rate", "-" if state["lr"] is None else "0 (ended)"
                    if state["lr"] == 0 else f"{state['lr']:.2e}")
    cards[4].metric("Elapsed", _duration(state["elapsed_seconds"]))
    if state["history"] or state["batches"]:
        _curves(state)
    else:
        st.caption("The curves appear after the first epoch.")


def _show_end(state: dict) -> None:
    status, metrics = state["status"], state["metrics"]
    if status == "finished":
        st.success(f"Run {state['name']} finished in {_duration(state['elapsed_seconds'])}.")
    elif status == "stopped":
        st.warning(f"Run {state['name']} was stopped; its best checkpoint is kept.")
    elif status == "interrupted":
        st.warning(f"Run {state['name']}'s process is gone (the server or machine stopped); its "
                   f"last good checkpoint is kept.")
    else:
        st.error(f"Run {state['name']} {status}: {state['error'] or 'see the log below'}")
    if state["log_tail"]:
        with st.expander("Last lines of the training log"):
            st.code(state["log_tail"])
    if metrics.get("best_val_acc") is not None:
        cards = st.columns(4)
        cards[0].metric("Best val accuracy", f"{metrics['best_val_acc']:.1%}")
        cards[1].metric("Best val loss", f"{metrics['best_val_loss']:.4f}")
        cards[2].metric("Test accuracy", "-" if metrics.get("test_acc") is None
                        else f"{metrics['test_acc']:.1%}")
        cards[3].metric("Epochs run", f"{metrics.get('epochs_run', '-')} (best {metrics.get('best_epoch')})")
    if (Path(state["path"]) / "checkpoint.pt").is_file():
        links = st.columns(3)
        params = {"run": state["name"], "data": state["data"] or ""}
        links[0].page_link("pages/evaluate.py", label=f"Evaluate {state['name']}",
                           icon=":material/analytics:", query_params=params)
        links[1].page_link("pages/predict.py", label=f"Use {state['name']} on Predict",
                           icon=":material/person_search:", query_params=params)
        links[2].page_link("pages/runs.py", label="All runs", icon=":material/history:")


@st.fragment(run_every=POLL_SECONDS)
def _live(path: str) -> None:
    state = run_state(path)
    if not state["active"]:
        # Ended: redraw the whole page (final metrics, links), keeping this run in the URL so
        # that a tab which found it as "the active run" still shows how it ended.
        st.query_params["run"] = state["name"]
        st.rerun()
    top = st.columns([4, 1])
    top[0].subheader(f"Training {state['name']}")
    top[0].caption(f"{state['arch']} on {state['data']} - {state['device'] or 'device pending'}")
    if state["stop_requested"]:
        top[1].button("Stopping...", disabled=True, key="stopping")
        st.info("Stop requested: the run ends after the current batch and keeps its best checkpoint.")
    elif top[1].button("Stop", type="secondary", key="stop", icon=":material/stop:"):
        try:
            stop_run(path)
        except (LaunchError, RunError) as exc:
            st.error(str(exc))
        st.rerun(scope="fragment")
    _show_state(state)


def _watched() -> str | None:
    """The run this page shows: the active one, else the one in the URL (?run=)."""
    current = active_run()
    if current is not None:
        return str(current.path)
    wanted = st.query_params.get("run")
    if wanted:
        try:
            return str(load_run(wanted).path)
        except RunError:
            st.warning(f"The run {wanted!r} from the link was not found.")
    return None


def _dataset_picker() -> str | None:
    source = st.radio("Dataset", SOURCES, horizontal=True, key="source",
                      help="A folder of class folders (one per person, or male/ and female/), "
                           "optionally inside train/ and val/ folders.")
    if source == SOURCES[0]:
        folder = st.text_input("Dataset folder on the server", value=_default_folder(),
                               key="folder", placeholder="/path/to/photos (holding <class>/*.jpg)")
        return folder.strip() or None
    if source == SOURCES[1]:
        upload = st.file_uploader("Zip of class folders", type=["zip"], key="zip",
                                  help="Unpacked under the cache folder after checking every "
                                       "entry; non-image files are skipped and listed.")
        if upload is None:
            return None
        try:
            with st.spinner("Checking and unpacking the zip..."):
                report = save_upload(upload, name=upload.name)
        except UploadError as exc:
            st.error(str(exc))
            return None
        st.success(f"{upload.name}: {describe(report)}" + (" (uploaded before)" if report.reused else ""))
        if report.skipped:
            with st.expander(f"{len(report.skipped)} file(s) skipped"):
                st.dataframe([{"file": s.name, "reason": s.reason} for s in report.skipped])
        return str(report.root)
    uploads = list_uploads()
    if not uploads:
        st.info("Nothing uploaded yet.")
        return None
    chosen = st.selectbox("Uploaded dataset", uploads, key="uploaded",
                          format_func=lambda r: f"{r.name}: {describe(r)}")
    return str(chosen.root)


# -- page ------------------------------------------------------------------------------------------

st.title("Train")
device, gpus = _device()
st.caption(f"Train a face classifier in the background on {device}. Leaving the page, a second "
           f"tab or a reload does not lose the run.")

watched = _watched()
if watched is not None:
    if run_state(watched)["active"]:
        _live(watched)
    else:
        state = run_state(watched)
        st.subheader(f"Run {state['name']}")
        _show_state(state)
        _show_end(state)
    st.divider()

st.subheader("New run")
data = _dataset_picker()
if data is not None and st.session_state.get("source") == SOURCES[0]:
    try:
        summary = _dataset_summary(data, st.session_state.get("task", "auto"))
        st.caption(f"{len(summary['counts'])} classes ({summary['task']}), "
                   f"{sum(summary['counts'].values())} photos, split: {summary['split']}")
    except ValueError as exc:
        st.error(str(exc))
        data = None

archs = _architectures()
left, middle, right = st.columns(3)
task = left.selectbox("Task", TASK_CHOICES, key="task",
                      help="auto: gender when the classes are exactly female/male, else identity.")
arch = middle.selectbox("Architecture", archs, key="arch",
                        index=archs.index("resnet18") if "resnet18" in archs else 0,
                        help="Changing it sets its tuned defaults below.")
defaults = form_defaults(arch)
# The tuned widgets are keyed per architecture: choosing another one shows its own defaults
# (widget values, not session-state writes, so a click right after loading sends what is shown).
k = f"-{arch}"
pretrained = right.checkbox("Start from ImageNet weights", value=defaults["pretrained"],
                            key="pretrained" + k, disabled=not defaults["pretrained_available"])
if defaults["pretrained_note"]:
    right.caption(defaults["pretrained_note"])
epochs = left.number_input("Epochs", 1, 1000, value=int(defaults["epochs"]), key="epochs" + k)
image_size = middle.number_input("Image size (px)", 16, 512, value=int(defaults["image_size"]),
                                 step=16, key="image_size" + k, disabled=defaults["is_embedding"])
nproc = 1
if gpus > 1:
    nproc = right.number_input("GPUs", 1, gpus, value=gpus,
                               help="One training process per GPU (torch.distributed).")

with st.expander("Advanced options"):
    a, b, c = st.columns(3)
    lr = a.number_input("Learning rate", 1e-6, 1.0, value=float(defaults["lr"]), format="%.5f",
                        key="lr" + k)
    batch_size = b.number_input("Batch size", 1, 4096, value=int(defaults["batch_size"]),
                                key="batch_size" + k)
    choices = defaults["freeze_choices"]
    freeze = c.selectbox("Freeze", choices, index=choices.index(defaults["freeze"]),
                         key="freeze" + k,
                         help="none: train everything; head: only the classifier; last:N: the "
                              "last N stages and the head.")
    augment = a.checkbox("Augmentation (flips, rotation, colour)", value=True)
    balance = b.selectbox("Class balancing", BALANCE_CHOICES,
                          help="weighted: sample classes equally; cap: at most the median class "
                               "size per epoch.")
    head = c.selectbox("Head", HEADS, index=list(HEADS).index(defaults["head"]), key="head" + k)
    optimizer = a.selectbox("Optimizer", OPTIMIZERS)
    scheduler = b.selectbox("Schedule", SCHEDULERS)
    patience = c.number_input("Early stopping patience (0 = off)", 0, 1000, value=5)
    seed = a.number_input("Seed", 0, 2**31 - 1, value=0)
    device_choice = b.selectbox("Device", ("auto", "cpu", "cuda"))
    name = c.text_input("Run name (optional)", placeholder=f"{arch}-YYYYmmdd-HHMMSS").strip()

if st.button("Launch training", type="primary", icon=":material/play_arrow:"):
    if data is None:
        st.error("Choose a dataset first: a folder on the server or a zip of class folders.")
    else:
        try:
            config = TrainConfig(
                data=data, arch=arch, task=task, epochs=int(epochs),
                image_size=None if defaults["is_embedding"] else int(image_size),
                batch_size=int(batch_size), lr=float(lr), pretrained=bool(pretrained),
                head=head, freeze=freeze, augment=augment, balance=balance,
                optimizer=optimizer, scheduler=scheduler, patience=int(patience), seed=int(seed),
                device=device_choice)
            with st.spinner("Starting the run..."):
                started = launch(config, name=name or None, nproc=int(nproc))
        except (LaunchError, ValueError) as exc:
            st.error(str(exc))
        else:
            st.query_params["run"] = started.name
            st.rerun()
