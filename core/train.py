"""Train one model from the command line (the dashboard runs exactly this as a subprocess).

    python -m core.train --data DIR --arch NAME --out RUN_DIR [--task identity|gender|auto]
        [--epochs N] [--image-size PX] [--batch-size B] [--lr LR] [--pretrained]
        [--head linear|mlp] [--freeze none|head|last:N] [--seed S] [--device auto|cpu|cuda] ...

A progress bar goes to stderr; the last line on stdout is one JSON object with the final metrics.
SIGTERM or Ctrl-C (once) stops after the current batch, like the run's STOP file; the run is then
"stopped" with its best checkpoint kept. Under ``torchrun`` every rank runs this; rank 0 writes.
Exit codes: 0 finished or stopped, 1 failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading

from core.config import BALANCE_CHOICES, HEADS, OPTIMIZERS, SCHEDULERS, TASK_CHOICES, TrainConfig


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (class folders, or train/ val/)")
    p.add_argument("--arch", default="resnet18", help="architecture (see core.models.list_models)")
    p.add_argument("--out", required=True, help="run folder to create (e.g. weights/my-run)")
    p.add_argument("--task", default="auto", choices=TASK_CHOICES)
    p.add_argument("--epochs", type=int, default=None, help="default: the architecture's")
    p.add_argument("--image-size", type=int, default=None, help="default: the architecture's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the architecture's")
    p.add_argument("--lr", type=float, default=None, help="default: the architecture's")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--scheduler", default="cosine", choices=SCHEDULERS)
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    p.add_argument("--head", default="linear", choices=HEADS)
    p.add_argument("--freeze", default="none", help="none | head | last:N")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--balance", default="none", choices=BALANCE_CHOICES)
    p.add_argument("--patience", type=int, default=5, help="early stopping; 0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--num-workers", type=int, default=0,
                   help="0: batched augmentation on the device; N: per-sample in N workers")
    p.add_argument("--split", type=float, nargs="+", default=[0.8, 0.1, 0.1],
                   metavar="FRACTION", help="train val [test] for unsplit datasets")
    p.add_argument("--crop-size", type=int, default=None, help="cached crop side (px)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["split"] = tuple(values["split"])
    return TrainConfig(**values)


def config_to_args(config: TrainConfig) -> list[str]:
    """The command-line arguments that rebuild ``config`` (what the Train page launches):
    ``[sys.executable, "-m", "core.train", *config_to_args(config)]``."""
    if not config.out:
        raise ValueError("config.out (the run folder) is required to launch core.train")
    defaults = TrainConfig(data=config.data)
    args: list[str] = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if field.name not in ("data", "out") and value == getattr(defaults, field.name):
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.name == "pretrained":
            args.append(flag)
        elif field.name == "augment":
            args.append("--no-augment")
        elif field.name == "split":
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def _install_stop_handlers(event: threading.Event) -> None:
    """SIGTERM and the first Ctrl-C ask for a clean stop; a second Ctrl-C interrupts at once."""
    def handler(signum, frame):
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args).resolved()
    except ValueError as exc:
        parser.error(str(exc))  # exits 2 with the usage line
    from core.training import TqdmCallback, fit

    stop = threading.Event()
    _install_stop_handlers(stop)
    callbacks = [] if args.no_progress else [TqdmCallback(file=sys.stderr)]
    try:
        result = fit(config, callbacks=callbacks, stop=stop)
    except Exception as exc:  # noqa: BLE001 - reported as JSON; run.json already says failed
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps({"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "run_dir": config.out}))
        return 1
    result.pop("history", None)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: one JSON line, from rank 0
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
