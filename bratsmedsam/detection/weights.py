"""What travels inside a detector's ``.pt`` besides the network: its id, its operating confidence and the channels
it was trained on.

A short CPU training run leaves confidences well below ultralytics' usual 0.25, so train-detector stores
the validation split's max-F1 confidence in the checkpoint itself under :data:`KEY`
(:func:`bratsmedsam.detection.threshold.select_threshold`); it travels with the ``.pt`` when the weights
are copied or published. The modalities stacked as its three channels travel the same way (:data:`CHANNELS_KEY`), so
``serve`` can refuse a detector trained on another stack. A leaf module: it imports nothing else of :mod:`bratsmedsam.detection`.
"""

from __future__ import annotations

from pathlib import Path

from .. import atomic
from ..digest import file_sha256

KEY = "bratsmedsam_operating"
CHANNELS_KEY = "bratsmedsam_channels"
#: the confidence used when the weights store none (ultralytics' usual default)
DEFAULT_CONF = 0.25
#: a stored confidence is floored here: a barely trained model's max-F1 point can sit near 0
MIN_STORED_CONF = 0.05


def weights_id(path: Path) -> str:
    """First 12 hex digits of the file's SHA-256: changes whenever the weights change."""
    return file_sha256(path)[:12]


def stored_threshold(ckpt) -> float | None:
    """The operating confidence stored in a loaded checkpoint dict, or None when there is none."""
    entry = ckpt.get(KEY) if isinstance(ckpt, dict) else None
    conf = entry.get("conf") if isinstance(entry, dict) else None
    return float(conf) if conf is not None else None


def store_threshold(weights: Path, entry: dict) -> None:
    """Write ``entry`` (``{"conf": float | None, ...}``) into the checkpoint at ``weights``, atomically."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    ckpt[KEY] = entry
    atomic.save_torch(ckpt, weights)


def store_channels(weights: Path, channels) -> None:
    """Record the modalities ``channels`` (three names) the detector at ``weights`` was trained on, atomically."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    ckpt[CHANNELS_KEY] = [str(c) for c in channels]
    atomic.save_torch(ckpt, weights)


def stored_channels(weights: Path) -> tuple[str, ...] | None:
    """The channels recorded in the detector checkpoint at ``weights``; None when it records none or is unreadable
    (the detector's loader reports an unreadable file itself)."""
    import torch

    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception:
        return None
    got = ckpt.get(CHANNELS_KEY) if isinstance(ckpt, dict) else None
    return tuple(got) if isinstance(got, (list, tuple)) and len(got) == 3 else None
