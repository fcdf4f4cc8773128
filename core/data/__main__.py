"""``python -m core.data DATA_DIR [--task identity|gender] [--split 0.8 0.1 0.1] [--seed S]``:
print the classes, the split and the fingerprint of a dataset as JSON (exit 2 with the reason
when it cannot be used)."""
from __future__ import annotations

import argparse
import json
import sys

from core.data.discover import discover_dataset
from core.data.spec import TASKS, DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__.split(":")[0])
    parser.add_argument("data", help="dataset folder (or a CelebA list_attr_celeba.txt)")
    parser.add_argument("--task", choices=TASKS, default=None)
    parser.add_argument("--split", type=float, nargs="+", default=[0.8, 0.1, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        spec = discover_dataset(args.data, task=args.task, split=tuple(args.split), seed=args.seed)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(spec.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
