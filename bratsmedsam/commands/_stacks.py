"""The channel-stack flags shared by ``prepare``, ``serve`` and ``segment``: ``--channels`` (one stack for both
models, the paper's setup), ``--detector-channels`` and ``--segmenter-channels`` (each model's own; they win over
``--channels``)."""

from __future__ import annotations

import argparse

from ..intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS

MODALITY_HELP = "three of t1c,t1n,t2w,t2f, repeats allowed"


def add_stack_arguments(p, default_note: str) -> None:
    """Add the three flags to parser ``p``; ``default_note`` says what an absent flag means (an absent flag is
    absent from the namespace too, so a ``--help`` that shows defaults does not print "None" for them)."""
    p.add_argument("--channels", default=argparse.SUPPRESS,
                   help=f"modalities stacked as both models' 3 channels ({MODALITY_HELP}, e.g. t2f,t2f,t2f)")
    p.add_argument("--detector-channels", default=argparse.SUPPRESS,
                   help=f"the detector's stack ({MODALITY_HELP}); default: {default_note}, else "
                        f"{','.join(DEFAULT_DETECTOR_CHANNELS)}")
    p.add_argument("--segmenter-channels", default=argparse.SUPPRESS,
                   help=f"the segmenter's stack ({MODALITY_HELP}); default: {default_note}, else "
                        f"{','.join(DEFAULT_SEGMENTER_CHANNELS)}")


def given_stacks(args) -> tuple[str | None, str | None]:
    """``(detector, segmenter)`` as the flags give them (None: not given)."""
    both = getattr(args, "channels", None)
    return getattr(args, "detector_channels", None) or both, getattr(args, "segmenter_channels", None) or both
