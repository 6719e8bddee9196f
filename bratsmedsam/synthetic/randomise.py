"""Domain randomisation: per-case acquisition and tumour-appearance parameters far wider than the
calibrated defaults, so that a detector trained on synthetic cases meets more of what real scanners and
real gliomas look like (profile ``randomised`` of ``sample-data``).

:func:`draw_domain` draws one case's parameters from its own stream ``(seed, index, DOMAIN_STREAM)``:
the ``standard`` profile never calls it, so its cases stay byte-identical. The parameters are plain JSON
(recorded per case in ``sample_info.json``); :mod:`.lesions` and :mod:`.contrast` read them, and
:func:`degrade` applies the resolution / blur part to one finished modality.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PROFILES = ("standard", "randomised")
DOMAIN_STREAM = 7  # third word of the per-case seed: a stream the standard profile never touches
MODALITIES = ("t1c", "t1n", "t2w", "t2f")
THICK_AXES = ("i", "j", "k")  # BraTS grid axes; k (axial) is the usual thick-slice direction


def _r(v, nd=3):
    return round(float(v), nd)


def draw_domain(seed: int, index: int) -> dict:
    """One case's randomised parameters (a JSON-ready dict); deterministic per (seed, index).

    - ``shape``: core radius range (mm, log-uniform by the case's size quantile), ellipsoid axis range
      (elongated lesions: their axial cross-sections taper to thin ends), outline irregularity
      (multiplies the smooth radius perturbations), number of lesions (1-4: small satellites), satellite radius.
    - ``contrast`` per modality: gamma of the normal-brain curve, compartment ratio jitter, bias field
      amplitude and correlation length, Rician noise level (fraction of the brain median).
    - ``texture``: within-tumour heterogeneity amplitude and correlation length, how much anatomy shows through.
    - ``resolution`` per modality: thick-slice factor and axis, in-plane downsample factor, Gaussian blur sigma (mm).
    """
    rng = np.random.default_rng([int(seed), int(index), DOMAIN_STREAM])
    shape = {
        "core_radius_mm": [4.0, 28.0],
        "axes_range": [0.45, 1.8],
        "irregularity": _r(rng.uniform(0.6, 1.8)),
        "n_lesions": int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15])),
        "satellite_radius_mm": [3.0, 8.0],
    }
    contrast = {}
    for m in MODALITIES:
        contrast[m] = {
            "gamma": _r(rng.uniform(0.65, 1.45)),
            "ratio_jitter": _r(rng.uniform(0.05, 0.3)),
            "bias_amplitude": _r(rng.uniform(0.05, 0.45)),
            "noise_fraction": _r(rng.uniform(0.01, 0.08), 4),
        }
    contrast["bias_corr_mm"] = _r(rng.uniform(70.0, 220.0), 1)
    contrast["vessels"] = _r(rng.uniform(0.2, 1.6))
    texture = {
        "heterogeneity": _r(rng.uniform(0.02, 0.3)),
        "heterogeneity_corr_mm": _r(rng.uniform(2.0, 10.0), 1),
        "anatomy_weight_scale": _r(rng.uniform(0.3, 1.6)),
    }
    resolution = {}
    for m in MODALITIES:
        thick = int(rng.choice([1, 2, 3, 4, 5], p=[0.35, 0.2, 0.2, 0.15, 0.1]))
        resolution[m] = {
            "thick_factor": thick,
            "thick_axis": THICK_AXES[int(rng.choice(3, p=[0.15, 0.15, 0.7]))],
            "inplane_factor": _r(rng.uniform(1.0, 2.0) if rng.random() < 0.5 else 1.0, 2),
            "blur_sigma_mm": _r(rng.uniform(0.0, 1.2) if rng.random() < 0.6 else 0.0, 2),
        }
    return {"profile": "randomised", "stream": [int(seed), int(index), DOMAIN_STREAM], "shape": shape,
            "contrast": contrast, "texture": texture, "resolution": resolution}


def degrade(vol: np.ndarray, brain: np.ndarray, params: dict) -> np.ndarray:
    """float32 ``vol`` as if acquired coarser and resampled to 1 mm: thick slices along one axis
    (block-averaged, then linearly interpolated back), an in-plane downsample / upsample of the other two,
    then a Gaussian blur; background set back to 0. Works on the brain's bounding box (+ margin)."""
    thick, inplane, sigma = int(params["thick_factor"]), float(params["inplane_factor"]), float(params["blur_sigma_mm"])
    if thick <= 1 and inplane <= 1.0 and sigma <= 0:
        return vol
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - 6, 0)
    hi = np.minimum(idx.max(0) + 7, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = vol[box].astype(np.float32)
    axis = THICK_AXES.index(params["thick_axis"])
    factors = [inplane] * 3
    factors[axis] = float(thick)
    if max(factors) > 1.0:
        if thick > 1:  # a thick slice integrates over its thickness (partial volume), it does not sample
            crop = ndimage.uniform_filter1d(crop, thick, axis=axis, mode="nearest")
        low = ndimage.zoom(crop, [1.0 / f for f in factors], order=1, grid_mode=True, mode="grid-constant")
        crop = ndimage.zoom(low, [n / m for n, m in zip(crop.shape, low.shape)], order=1, grid_mode=True,
                            mode="nearest")[tuple(slice(0, n) for n in crop.shape)]
    if sigma > 0:
        crop = ndimage.gaussian_filter(crop, sigma)
    out = vol.astype(np.float32, copy=True)
    out[box] = crop
    out[~brain] = 0
    return out
