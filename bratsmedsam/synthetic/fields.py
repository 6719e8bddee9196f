"""Smooth random fields: lesion shape perturbations, texture, bias fields, vessels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_field(shape: tuple[int, ...], corr_mm: float, rng: np.random.Generator) -> np.ndarray:
    """float32 random field of ``shape`` (1 mm voxels) with correlation length ~``corr_mm``, mean 0, std 1.

    White noise on a grid ``corr_mm / 2`` coarser, Gaussian-smoothed there, then linearly zoomed up.
    """
    step = max(corr_mm / 2.0, 1.0)
    low = tuple(int(np.ceil(n / step)) + 3 for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(low, dtype=np.float32), 1.0, mode="wrap")
    f = upsample_linear(noise, shape, step)
    f -= f.mean()
    std = f.std()
    return f / std if std > 0 else f


def upsample_linear(low: np.ndarray, shape: tuple[int, ...], step: float) -> np.ndarray:
    """float32 ``shape``: ``low`` sampled every ``step`` voxels (from low[1]), linearly interpolated.

    Axis by axis (gather + lerp), so the cost is a few passes over the output; ``scipy.ndimage.zoom``
    spends ~10x longer on the same job.
    """
    out = low.astype(np.float32)
    for axis, n in enumerate(shape):
        pos = 1.0 + np.arange(n, dtype=np.float64) / step
        i0 = np.minimum(np.floor(pos).astype(np.intp), out.shape[axis] - 2)
        w = (pos - i0).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        w = w.reshape([-1 if d == axis else 1 for d in range(out.ndim)])
        out = a + (b - a) * w
    return out


def separable_field(shape: tuple[int, int, int], corr_mm: float, rng: np.random.Generator, terms: int = 3):
    """A smooth field as a sum of ``terms`` products of 1-D smooth curves; returns ``f(i, j, k)`` callable.

    Cheap to evaluate at scattered voxel indices (e.g. only the brain voxels): used for bias fields.
    """
    curves = []
    for _ in range(terms):
        per_axis = []
        for n in shape:
            pad = int(2 * corr_mm)
            c = ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), corr_mm / 2.0)[pad:pad + n]
            c = c - c.mean()
            per_axis.append((c / (c.std() + 1e-12)).astype(np.float32))
        curves.append(per_axis)

    def evaluate(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        out = np.zeros(i.shape, np.float32)
        for ci, cj, ck in curves:
            out += ci[i] * cj[j] * ck[k]
        return out / np.float32(np.sqrt(terms))

    return evaluate


def vessel_map(shape: tuple[int, int, int], seed: int = 12345) -> np.ndarray:
    """float32 (shape) tube-like network in [0, 1]: where two smooth random fields are both near zero.

    Stands in for enhancing vessels on T1c. Fixed seed: the same 'patient vasculature' for every call.
    """
    rng = np.random.default_rng(seed)
    half = tuple(int(np.ceil(n / 2)) for n in shape)
    f1 = smooth_field(half, 14.0, rng)
    f2 = smooth_field(half, 14.0, rng)
    tubes = np.exp(-(f1 ** 2 + f2 ** 2) / (2 * 0.09 ** 2)).astype(np.float32)
    up = ndimage.zoom(tubes, 2, order=1)[tuple(slice(0, n) for n in shape)]
    return np.ascontiguousarray(up, dtype=np.float32)
