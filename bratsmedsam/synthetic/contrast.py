"""The four BraTS MR contrasts of a synthetic case, calibrated on the real case.

Normal brain (per case: random contrast gamma, brain median 1):
- ``t1n``: the anatomy's T1-weighted image;
- ``t1c``: T1 with contrast: slightly flatter grey/white contrast plus bright vessels;
- ``t2w``: the anatomy's T2-weighted image;
- ``t2f``: FLAIR: T2-like with CSF suppressed (dark).
Tumour compartments get ``ratio * median(normal brain)`` (ratio from ``REAL_RATIOS``, jittered per case),
mixed with a little of the underlying anatomy and a smooth heterogeneity, with soft (partial-volume)
edges. Then a smooth multiplicative bias field, a global intensity scale and Rician noise (the ``randomised``
profile draws all of these from wider ranges, then thickens the slices / blurs: :mod:`.randomise`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .fields import separable_field, smooth_field, vessel_map
from .lesions import ED, ET, NCR
from .randomise import degrade

COMPARTMENTS = {"NCR": NCR, "ED": ED, "ET": ET}

# median(compartment) / median(normal brain = brain voxels outside the tumour), per modality, measured once
# with `compartment_ratios` on the real case BraTS-GLI-00000-000 (../shared/data/brats2023); the generator's
# targets, so it also works without the real case. Note ED on t1n is slightly BRIGHT (1.12) in that case.
REAL_RATIOS = {
    "t1c": {"NCR": 0.888, "ED": 1.135, "ET": 2.104},
    "t1n": {"NCR": 1.008, "ED": 1.116, "ET": 1.030},
    "t2w": {"NCR": 1.735, "ED": 1.273, "ET": 1.340},
    "t2f": {"NCR": 1.897, "ED": 1.490, "ET": 1.537},
}
# Normal-brain medians of the real case (int16 units), measured once: the centre of the global scale.
REAL_NORMAL_MEDIAN = {"t1c": 1976.0, "t1n": 825.0, "t2w": 480.0, "t2f": 981.0}
RATIO_JITTER = 0.08  # per case, per modality and compartment: ratio * exp(U(-j, j))
CALIBRATION_PASSES = 4
# How much of the underlying anatomy's texture shows through each compartment (0 = flat).
ANATOMY_WEIGHT = {"NCR": 0.15, "ED": 0.5, "ET": 0.3}


def brain_mask(images: dict[str, np.ndarray]) -> np.ndarray:
    """bool (X,Y,Z): voxels non-zero in any modality (BraTS images are skull-stripped, background 0)."""
    mask = None
    for img in images.values():
        m = np.asarray(img) > 0
        mask = m if mask is None else (mask | m)
    return mask


def compartment_ratios(images: dict[str, np.ndarray], seg: np.ndarray) -> dict[str, dict[str, float]]:
    """{modality: {NCR|ED|ET: median(compartment) / median(brain outside the tumour)}}; NaN if absent."""
    brain = brain_mask(images)
    normal = brain & (seg == 0)
    out = {}
    for m, img in images.items():
        ref = float(np.median(img[normal]))
        row = {}
        for name, label in COMPARTMENTS.items():
            sel = seg == label
            row[name] = float(np.median(img[sel]) / ref) if sel.any() and ref > 0 else float("nan")
        out[m] = row
    return out


def _normal_brain(anatomy: Anatomy, rng: np.random.Generator, domain: dict | None = None) -> dict[str, np.ndarray]:
    """float32 full volumes per modality, 0 outside the brain (median set to 1 later, outside the tumour).

    ``domain`` (randomised profile): its per-modality gamma and vessel strength replace the default draws."""
    if "vessels" not in anatomy._cache:
        anatomy._cache["vessels"] = vessel_map(anatomy.tissues.shape) * anatomy.brain
    vessels = anatomy._cache["vessels"]
    brain = anatomy.brain
    t1, t2 = anatomy.t1[brain], anatomy.t2[brain]  # brain voxels only: 1/6 of the grid
    g = rng.uniform(0.85, 1.15, 4).astype(np.float32)
    vessel_gain = np.float32(rng.uniform(0.6, 1.2))
    if domain is not None:
        g = np.asarray([domain["contrast"][m]["gamma"] for m in ("t1c", "t1n", "t2w", "t2f")], np.float32)
        vessel_gain = np.float32(domain["contrast"]["vessels"])
    vectors = {
        "t1c": t1 ** (0.75 * g[0]) * (1 + vessel_gain * vessels[brain]),
        "t1n": t1 ** g[1],
        "t2w": t2 ** g[2],
        "t2f": t2 ** g[3] * (1 - 0.85 * anatomy.csf_fraction[brain]),
    }
    out = {}
    for m, v in vectors.items():
        vol = np.zeros(brain.shape, np.float32)
        vol[brain] = v
        out[m] = vol
    return out


def _compose(anat, soft, soft_sum, values):
    mixed = anat * (1 - soft_sum)
    for name, value in values.items():
        mixed += soft[name] * value
    return mixed


def synthesize_images(anatomy: Anatomy, seg: np.ndarray, rng: np.random.Generator,
                      ratios: dict[str, dict[str, float]] | None = None,
                      domain: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """int16 (240,240,155) images per modality for label map ``seg``; background exactly 0, brain >= 1.

    Returns (images, settings) where settings records the per-case scale, noise and target ratios.
    ``domain`` (:func:`.randomise.draw_domain`; None = the calibrated defaults) sets the gamma, ratio
    jitter, bias field, noise, texture and, last, the resolution / blur of each modality.
    """
    ratios = ratios or REAL_RATIOS
    brain = anatomy.brain
    normal = brain & (seg == 0)
    tumour = seg > 0
    # Work on the tumour's bounding box (+ margin) for the compartments.
    idx = np.argwhere(tumour)
    if not len(idx):
        raise ValueError("synthesize_images needs a label map with at least one tumour voxel")
    lo = np.maximum(idx.min(0) - 3, 0)
    hi = np.minimum(idx.max(0) + 4, seg.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    cshape = tuple(b - a for a, b in zip(lo, hi))
    seg_c = seg[box]
    soft = {name: ndimage.gaussian_filter((seg_c == lab).astype(np.float32), 0.6) for name, lab in COMPARTMENTS.items()}
    soft_sum = sum(soft.values())
    bi, bj, bk = np.nonzero(brain)
    bias_corr = 160.0 if domain is None else float(domain["contrast"]["bias_corr_mm"])
    bias_field = separable_field(seg.shape, bias_corr, rng)(bi, bj, bk)
    het_amp, het_corr, weight_scale = 0.08, 6.0, 1.0
    if domain is not None:
        tex = domain["texture"]
        het_amp, het_corr, weight_scale = tex["heterogeneity"], tex["heterogeneity_corr_mm"], tex["anatomy_weight_scale"]
    in_tumour = seg[bi, bj, bk] > 0
    settings = {"targets": {}, "scale": {}, "noise_sigma": {}, "bias_amplitude": {}}
    images = {}
    for m, vol in _normal_brain(anatomy, rng, domain).items():
        vol = vol / np.float32(np.median(vol[normal]))
        jitter = RATIO_JITTER if domain is None else domain["contrast"][m]["ratio_jitter"]
        targets = {c: float(ratios[m][c] * np.exp(rng.uniform(-jitter, jitter))) for c in COMPARTMENTS}
        settings["targets"][m] = {c: round(v, 3) for c, v in targets.items()}
        het = smooth_field(cshape, het_corr, rng)
        anat = vol[box]
        values = {}
        for name, lab in COMPARTMENTS.items():
            sel = seg_c == lab
            if sel.any():
                w = ANATOMY_WEIGHT[name] if domain is None else min(0.9, ANATOMY_WEIGHT[name] * weight_scale)
                texture = anat / np.float32(max(float(np.median(anat[sel])), 1e-3))
                values[name] = targets[name] * ((1 - w) + w * texture) * (1 + het_amp * het)
        mixed = _compose(anat, soft, soft_sum, values)
        # Soft edges pull a thin compartment (a 2-3 mm rim, a small necrosis) towards its neighbours:
        # rescale each compartment until its median hits the target again (a few fixed-point passes).
        for _ in range(CALIBRATION_PASSES):
            for name, lab in COMPARTMENTS.items():
                if name in values:
                    achieved = float(np.median(mixed[seg_c == lab]))
                    values[name] *= np.float32(targets[name] / max(achieved, 1e-3))
            mixed = _compose(anat, soft, soft_sum, values)
        vol[box] = np.where(brain[box], mixed, 0)
        # Bias field, global scale, Rician noise: on brain voxels only.
        amp = float(rng.uniform(0.05, 0.15))
        scale = float(REAL_NORMAL_MEDIAN[m] * np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        sigma = float(rng.uniform(0.015, 0.04)) * scale
        if domain is not None:
            amp = float(domain["contrast"][m]["bias_amplitude"])
            sigma = float(domain["contrast"][m]["noise_fraction"]) * scale
        log_bias = amp * bias_field
        # Anchor the bias so that it is neutral over the tumour relative to the normal brain: the field
        # still varies across the brain, but the compartment-to-brain ratios stay calibrated.
        log_bias -= np.float32(log_bias[in_tumour].mean() - np.median(log_bias[~in_tumour]))
        v = vol[bi, bj, bk] * np.exp(log_bias) * np.float32(scale)
        n1 = rng.standard_normal(v.shape, dtype=np.float32) * np.float32(sigma)
        n2 = rng.standard_normal(v.shape, dtype=np.float32) * np.float32(sigma)
        v = np.sqrt((v + n1) ** 2 + n2 ** 2)
        if domain is not None:  # acquired coarser / blurrier, then resampled to 1 mm
            full = np.zeros(seg.shape, np.float32)
            full[bi, bj, bk] = v
            v = degrade(full, brain, domain["resolution"][m])[bi, bj, bk]
        out = np.zeros(seg.shape, np.int16)
        out[bi, bj, bk] = np.clip(np.rint(v), 1, np.iinfo(np.int16).max).astype(np.int16)
        images[m] = out
        settings["scale"][m] = round(scale, 1)
        settings["noise_sigma"][m] = round(sigma, 1)
        settings["bias_amplitude"][m] = round(amp, 3)
    return images, settings
