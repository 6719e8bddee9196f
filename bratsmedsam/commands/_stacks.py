"""The channel-stack flags shared by ``prepare``, ``serve`` and ``segment``: ``--channels`` (one stack for both
models, the paper's setup), ``--detector-channels`` and ``--segmenter-channels`` (each model's own; they win over
``--channels``)."""

from __future__ import annotations

from ..intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS

MODALITY_HELP = "three of t1c,t1n,t2w,t2f, repeats allowed"


def add_stack_arguments(p, default_note: str) -> None:
    """Add the three flags to parser ``p``; ``default_note`` says what an absent flag means."""
    p.add_argument("--channels", default=None,
                   help=f"modalities stacked as both models' 3 channels ({MODALITY_HELP}, e.g. t2f,t2f,t2f)")
    p.add_argument("--detector-channels", default=None,
                   help=f"the detector's stack ({MODALITY_HELP}); default: {default_note}, else "
                        f"{','.join(DEFAULT_DETECTOR_CHANNELS)}")
    p.add_argument("--segmenter-channels", default=None,
                   help=f"the segmenter's stack ({MODALITY_HELP}); default: {default_note}, else "
                        f"{','.join(DEFAULT_SEGMENTER_CHANNELS)}")


def given_stacks(args) -> tuple[str | None, str | None]:
    """``(detector, segmenter)`` as the flags give them (None: not given)."""
    return args.detector_channels or args.channels, args.segmenter_channels or args.channels
