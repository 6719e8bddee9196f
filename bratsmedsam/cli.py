"""``python main.py <verb> ...``: one verb per job. Verbs live in :mod:`bratsmedsam.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import commands
from .errors import UserError

# Order in --help: the pipeline's order.
ORDER = ["sample-data", "prepare", "train-detector", "predict-detector", "evaluate-detector",
         "train-segmenter", "segment", "evaluate", "reproduce", "serve", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="brats-medsam: BraTS MRI -> YOLO tumour boxes -> MedSAM masks, and the MONAI Label app.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers of the verbs, not a verb
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    # argparse lists choices in insertion order; reorder to the pipeline's order.
    sub._choices_actions.sort(key=lambda a: ORDER.index(a.dest) if a.dest in ORDER else len(ORDER))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line for the user, details on request
        if args.debug or os.environ.get("BRATSMEDSAM_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
