"""Per-volume intensity normalisation to 0-255 and channel composition.

MedSAM's MR preprocessing: clip each volume to the 0.5 and 99.5 percentiles of its brain voxels,
rescale to 0-255, keep the background at 0. The brain is the set of voxels that differ from the
volume's background value: usually 0, but some exports have a non-zero background, so the background
is taken as the dominant value on the volume's border faces (or an explicit mask is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import CaseError, UserError

#: the paper's stack (T1 post-contrast, T2, FLAIR as R, G, B): ``--channels t1c,t2w,t2f``
PAPER_CHANNELS = ("t1c", "t2w", "t2f")
#: FLAIR in all three channels: the better segmenter input on the held-out real case, zero-shot and fine-tuned (GT-box
#: 3D Dice 0.899 vs 0.839 zero-shot; README "Fine-tuning judged on the real case")
FLAIR_CHANNELS = ("t2f", "t2f", "t2f")
#: each model reads its own stack of the same study (``Stacks``), each chosen on the held-out real case (README
#: "Channel stacks"): the detector the paper's (quick YOLOv5n mAP50 0.539 vs 0.349 in FLAIR x3; trained on the sample
#: studies in FLAIR x3 it found almost nothing on a synthetic case), the segmenter FLAIR x3
DEFAULT_DETECTOR_CHANNELS = PAPER_CHANNELS
DEFAULT_SEGMENTER_CHANNELS = FLAIR_CHANNELS
# The border's most common value is the background if it covers at least this fraction of the border.
BACKGROUND_MIN_FRACTION = 0.5


def background_value(vol: np.ndarray) -> float | None:
    """The dominant value on the six border faces of a ``(X, Y, Z)`` volume, or None if there is none."""
    faces = np.concatenate([
        vol[0].ravel(), vol[-1].ravel(), vol[:, 0].ravel(), vol[:, -1].ravel(),
        vol[:, :, 0].ravel(), vol[:, :, -1].ravel(),
    ])
    values, counts = np.unique(faces, return_counts=True)
    top = int(counts.argmax())
    if counts[top] >= BACKGROUND_MIN_FRACTION * faces.size:
        return float(values[top])
    return None


def brain_mask_of(vol: np.ndarray) -> np.ndarray:
    """Bool ``(X, Y, Z)``: voxels that differ from the background value (all voxels if there is none)."""
    bg = background_value(vol)
    if bg is None:
        return np.ones(vol.shape, dtype=bool)
    return vol != bg


def normalize_volume(
    vol: np.ndarray, brain_mask: np.ndarray | None = None, lower: float = 0.5, upper: float = 99.5
) -> np.ndarray:
    """Float ``(X, Y, Z)`` -> uint8 ``(X, Y, Z)``: brain voxels clipped to the ``lower``/``upper``
    percentiles of the brain and scaled to 0-255; voxels outside the brain are 0.

    ``brain_mask`` (bool, same shape) overrides the automatic background detection.
    """
    if not 0 <= lower < upper <= 100:
        raise UserError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    vol = np.asarray(vol, dtype=np.float32)
    if brain_mask is None:
        mask = brain_mask_of(vol)
    else:
        mask = np.asarray(brain_mask, dtype=bool)
        if mask.shape != vol.shape:
            raise UserError(f"brain mask has shape {mask.shape}, expected {vol.shape} like the volume")
    out = np.zeros(vol.shape, dtype=np.uint8)
    if not mask.any():
        return out
    vals = vol[mask]
    lo, hi = (float(v) for v in np.percentile(vals, [lower, upper]))
    if hi <= lo:  # (nearly) constant brain: show it, do not divide by zero
        out[mask] = np.where(vals >= hi, 255, 0).astype(np.uint8)
        return out
    scaled = (np.clip(vals, lo, hi) - lo) * (255.0 / (hi - lo))
    out[mask] = np.rint(scaled).astype(np.uint8)
    return out


def parse_channels(channels: str | Sequence[str]) -> tuple[str, str, str]:
    """``"t1c,t2w,t2f"`` or a sequence -> a tuple of exactly three known modalities (repeats allowed)."""
    from .cases import MODALITIES

    items = [c.strip().lower() for c in (channels.split(",") if isinstance(channels, str) else channels)]
    if len(items) != 3:
        raise UserError(f"channels must name exactly three modalities (e.g. t1c,t2w,t2f), got {list(items)}")
    for c in items:
        if c not in MODALITIES:
            raise UserError(f"unknown modality {c!r} in channels: expected three of {', '.join(MODALITIES)}")
    return tuple(items)  # type: ignore[return-value]


def compose_channels(
    case, channels: Sequence[str] = PAPER_CHANNELS, lower: float = 0.5, upper: float = 99.5
) -> np.ndarray:
    """Stack three normalised modalities of a loaded case: uint8 ``(X, Y, Z, 3)``, channel c = ``channels[c]``.

    Each distinct modality is normalised once (``t2f,t2f,t2f`` costs one normalisation).
    """
    return compose_stacks(case, Stacks.one(channels), lower, upper)[0]


@dataclass(frozen=True)
class Stacks:
    """The modalities stacked as the three channels of each model's input, for one study: the detector's and the
    segmenter's (the same tuple for both is the paper's one-stack setup)."""

    detector: tuple[str, str, str] = DEFAULT_DETECTOR_CHANNELS
    segmenter: tuple[str, str, str] = DEFAULT_SEGMENTER_CHANNELS

    @classmethod
    def one(cls, channels: str | Sequence[str]) -> "Stacks":
        """Both models on the one stack ``channels``."""
        channels = parse_channels(channels)
        return cls(channels, channels)

    @property
    def shared(self) -> bool:
        """Both models read the same stack (one array, one set of slice images)."""
        return tuple(self.detector) == tuple(self.segmenter)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Every modality either stack names, once, in first-named order."""
        return tuple(dict.fromkeys((*self.detector, *self.segmenter)))

    def describe(self) -> str:
        d, s = ",".join(self.detector), ",".join(self.segmenter)
        return d if self.shared else f"detector {d}, segmenter {s}"


def compose_stacks(case, stacks: Stacks, lower: float = 0.5, upper: float = 99.5) -> tuple[np.ndarray, np.ndarray]:
    """The detector's and the segmenter's uint8 ``(X, Y, Z, 3)`` stacks of a loaded case (one array when they are
    the same). Each distinct modality is normalised once (``t2f,t2f,t2f`` costs one normalisation)."""
    det, seg = parse_channels(stacks.detector), parse_channels(stacks.segmenter)
    missing = [c for c in (*det, *seg) if c not in case.images]
    if missing:
        raise CaseError(case.case_id, f"modality {missing[0]} is not loaded (needed for channels "
                        f"{','.join(det if missing[0] in det else seg)})")
    done = {m: normalize_volume(case.images[m], lower=lower, upper=upper) for m in dict.fromkeys((*det, *seg))}
    first = np.stack([done[c] for c in det], axis=-1)
    return first, (first if det == seg else np.stack([done[c] for c in seg], axis=-1))
