"""Glioma label maps on a healthy brain: necrotic core (1), oedema (2), enhancing rim (3).

A lesion is a randomly rotated ellipsoid whose radius is perturbed by a smooth random field
(irregular, lobulated outlines). Inside the tumour core (``d_core < 1``) a necrotic centre with its own
perturbed radius, at least ~2.5 mm inside the core's edge, leaves an enhancing rim; oedema extends
``oedema_factor`` times further, spreads less into grey matter, never into CSF, never outside the brain.
All shapes are drawn on a crop around the lesion, so a case costs a fraction of a full-volume pass.
``mass_effect`` first pushes the healthy anatomy around each lesion outwards a little (displaced
ventricles and sulci), as a growing tumour does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from scipy import ndimage

from .anatomy import CSF, GM, Anatomy
from .fields import smooth_field

NCR, ED, ET = 1, 2, 3
CORE_RADIUS_MM = (5.0, 26.0)  # tumour core (NCR + ET) radius: 1 cm to ~5 cm across
AXES_RANGE = (0.75, 1.3)  # ellipsoid semi-axis scales, uniform per axis
OEDEMA_FACTOR = (1.3, 2.1)  # oedema radius / core radius: whole tumour ~1.3 cm to ~11 cm across
MIDLINE_I = 119.0  # BraTS grid: left/right midline (SRI24 brain centroid)
MIN_K = 50  # keep centres above the cerebellum / brainstem (BraTS gliomas are mostly supratentorial)


@dataclass
class LesionSpec:
    """One lesion in BraTS voxel coordinates (1 mm)."""

    centre: tuple[float, float, float]  # (i, j, k)
    core_radius: float  # mm, before the shape perturbation
    oedema_factor: float
    necrosis_fraction: float  # necrotic radius / core radius; 0 = no necrosis
    axes: tuple[float, float, float]  # ellipsoid semi-axis scales
    rotation: list  # 3x3 rotation matrix (nested list, JSON-friendly)
    push: float = 0.0  # mass effect: peak fraction by which nearby anatomy is pushed outwards (< 1)

    def to_json(self) -> dict:
        d = asdict(self)
        d["centre"] = [round(float(v), 1) for v in self.centre]
        d["rotation"] = [[round(float(v), 4) for v in row] for row in self.rotation]
        for key in ("core_radius", "oedema_factor", "necrosis_fraction", "push"):
            d[key] = round(float(d[key]), 3)
        d["axes"] = [round(float(v), 3) for v in self.axes]
        return d


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _pick_centre(anatomy: Anatomy, radius: float, rng: np.random.Generator, near=None, near_dist=None):
    """A brain voxel (GM/WM, supratentorial) deep enough for ``radius``; None if there is none."""
    depth = anatomy.depth
    ok = (depth >= radius * 0.9 + 3.0) & ((anatomy.tissues == GM) | (anatomy.tissues == 3))
    ok[:, :, :MIN_K] = False
    cand = np.argwhere(ok)
    if near is not None and len(cand):
        d = np.linalg.norm(cand - np.asarray(near)[None], axis=1)
        cand = cand[(d > near_dist * 0.8) & (d < near_dist * 1.4)]
    else:
        lateral = np.abs(cand[:, 0] - MIDLINE_I) >= min(radius * 0.6, 18.0)
        cand = cand[lateral]
    if not len(cand):
        return None
    return tuple(float(v) for v in cand[rng.integers(len(cand))])


def draw_lesions(anatomy: Anatomy, rng: np.random.Generator, size_quantile: float, n_lesions: int,
                 necrosis: bool, shape: dict | None = None) -> list[LesionSpec]:
    """Lesion parameters for one case; ``size_quantile`` in [0, 1) picks the core radius (log scale).

    ``shape`` (the randomised profile's, see :func:`.randomise.draw_domain`) widens the ranges:
    ``core_radius_mm``, ``axes_range`` (elongation), ``satellite_radius_mm``; None = the calibrated defaults.
    """
    shape = shape or {}
    core_range = shape.get("core_radius_mm", CORE_RADIUS_MM)
    axes_range = shape.get("axes_range", AXES_RANGE)
    lo, hi = np.log(core_range[0]), np.log(core_range[1])
    specs: list[LesionSpec] = []
    radius = float(np.exp(lo + size_quantile * (hi - lo)))
    for n in range(n_lesions):
        if n > 0:  # a satellite: smaller, near the first lesion's oedema edge
            first = specs[0]
            if "satellite_radius_mm" in shape:
                s_lo, s_hi = shape["satellite_radius_mm"]
                radius = float(rng.uniform(s_lo, max(s_lo + 0.5, min(s_hi, first.core_radius))))
            else:
                radius = float(rng.uniform(CORE_RADIUS_MM[0], max(CORE_RADIUS_MM[0] + 1, min(10.0, first.core_radius))))
        oedema = float(rng.uniform(*OEDEMA_FACTOR))
        centre = None
        r = radius
        while centre is None and r >= 3.0:
            if n == 0:
                centre = _pick_centre(anatomy, r, rng)
            else:
                centre = _pick_centre(anatomy, r, rng, near=specs[0].centre,
                                      near_dist=specs[0].core_radius * specs[0].oedema_factor + r * oedema)
                if centre is None:
                    centre = _pick_centre(anatomy, r, rng)
            if centre is None:
                r *= 0.85
        if centre is None:
            continue
        nf = max(float(rng.uniform(0.35, 0.75)), 3.5 / r) if necrosis else 0.0
        specs.append(LesionSpec(
            centre=centre, core_radius=r, oedema_factor=oedema, necrosis_fraction=nf,
            axes=tuple(float(a) for a in rng.uniform(axes_range[0], axes_range[1], 3)),
            rotation=_random_rotation(rng).tolist(),
            push=float(rng.uniform(0.15, 0.4) * min(1.0, r / 15.0)),
        ))
    return specs


def _crop(spec: LesionSpec, shape, irregularity: float = 1.0) -> tuple[slice, slice, slice]:
    reach = spec.core_radius * spec.oedema_factor * max(spec.axes) * 1.7 + 4
    if irregularity > 1.0:  # larger perturbations reach further: ~2 sd of the oedema's at the new amplitude
        reach *= float(np.exp(0.6 * (irregularity - 1.0)))
    return tuple(slice(max(0, int(c - reach)), min(n, int(np.ceil(c + reach)) + 1))
                 for c, n in zip(spec.centre, shape))


def _one_body(lesion: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of one lesion's voxels (all False when there are none).

    Oedema that stops at CSF and the brain's edge breaks into islands - up to 15 per case, up to 1,568 voxels,
    none holding tumour core (the randomised profile's lobulated outlines at seed 0). Peritumoural oedema spreads
    from its tumour, and a BraTS label is one body per lesion (the shared real case: one lesion, 151 voxels
    joined to it within the lesion-wise metric's 3-voxel dilation). Multifocal disease stays: every satellite is a
    lesion of its own. MONAI's helper, 26-connected."""
    from monai.transforms.utils import get_largest_connected_component_mask

    return np.asarray(get_largest_connected_component_mask(lesion, connectivity=3), bool)


def render_lesions(anatomy: Anatomy, specs: list[LesionSpec], rng: np.random.Generator,
                   irregularity: float = 1.0) -> np.ndarray:
    """uint8 (240, 240, 155) label map {0, 1 NCR, 2 ED, 3 ET}; labels only inside the brain, each lesion one
    26-connected body (:func:`_one_body`).

    ``irregularity`` multiplies the amplitude of the smooth radius perturbations (1 = the default outlines;
    2 = deeply lobulated)."""
    amp = [np.float32(a * irregularity) for a in (0.22, 0.3, 0.2)] if irregularity != 1.0 else (0.22, 0.3, 0.2)
    shape = anatomy.tissues.shape
    ncr = np.zeros(shape, bool)
    et = np.zeros(shape, bool)
    ed = np.zeros(shape, bool)
    for spec in specs:
        box = _crop(spec, shape, irregularity)
        cshape = tuple(s.stop - s.start for s in box)
        grids = np.ogrid[box[0], box[1], box[2]]
        rel = [(g - c).astype(np.float32) for g, c in zip(grids, spec.centre)]
        rot = np.asarray(spec.rotation, np.float32)
        # Ellipsoid metric: |diag(1/axes) R^T (x - c)|.
        dist2 = np.zeros(cshape, np.float32)
        for a in range(3):
            u = rel[0] * rot[0, a] + rel[1] * rot[1, a] + rel[2] * rot[2, a]
            dist2 += (u / np.float32(spec.axes[a])) ** 2
        dist = np.sqrt(dist2)
        r = spec.core_radius
        brain = anatomy.brain[box]
        tissue = anatomy.tissues[box]
        d_core = dist / (r * np.exp(amp[0] * smooth_field(cshape, max(5.0, r / 1.5), rng)))
        core = (d_core < 1) & brain
        d_ed = dist / (r * spec.oedema_factor * np.exp(amp[1] * smooth_field(cshape, max(8.0, r), rng)))
        d_ed = np.where(tissue == GM, d_ed * 1.25, d_ed)
        oedema = (d_ed < 1) & brain & (tissue != CSF) & ~core
        body = _one_body(core | oedema)
        core &= body
        ed[box] |= oedema & body
        if spec.necrosis_fraction > 0:
            d_ncr = dist / (r * spec.necrosis_fraction * np.exp(amp[2] * smooth_field(cshape, max(4.0, r / 2), rng)))
            n = core & (d_ncr < 1) & (d_core < 1 - 2.5 / r)
            ncr[box] |= n
            et[box] |= core & ~n
        else:
            et[box] |= core
    seg = np.zeros(shape, np.uint8)
    seg[ed] = ED
    seg[ncr] = NCR
    seg[et] = ET
    return seg


def mass_effect(anatomy: Anatomy, specs: list[LesionSpec]) -> Anatomy:
    """A copy of ``anatomy`` warped away from each lesion centre; the brain outline stays where it is.

    Backward map: the voxel at x shows the anatomy at ``x - push * exp(-|x - c|^2 / w^2) * (x - c)``
    with ``w = 1.2 * core_radius``; monotone along each ray for push < 1, so nothing folds.
    """
    specs = [s for s in specs if s.push > 0]
    if not specs:
        return anatomy
    shape = anatomy.tissues.shape
    boxes = []
    for spec in specs:
        reach = 2.5 * 1.2 * spec.core_radius
        boxes.append([(max(0, int(c - reach)), min(n, int(np.ceil(c + reach)) + 1)) for c, n in zip(spec.centre, shape)])
    box = tuple(slice(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes)) for a in range(3))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij"))
    src = grid.copy()
    for spec in specs:
        rel = grid - np.asarray(spec.centre, np.float32)[:, None, None, None]
        w2 = np.float32((1.2 * spec.core_radius) ** 2)
        src -= rel * (np.float32(spec.push) * np.exp(-(rel ** 2).sum(0) / w2))
    del grid
    brain = anatomy.brain[box]
    tissues = anatomy.tissues.copy()
    warped_t = ndimage.map_coordinates(anatomy.tissues, src, order=0)
    warped_t = np.where(brain & (warped_t == 0), CSF, warped_t)  # brain edge pulled inwards: sulcal CSF
    tissues[box] = np.where(brain, warped_t, 0)
    images = []
    for img in (anatomy.t1, anatomy.t2):
        csf_value = np.float32(np.median(img[anatomy.tissues == CSF]))
        w = ndimage.map_coordinates(img, src, order=1)
        w = np.where(brain & (w <= 0), csf_value, w)
        out = img.copy()
        out[box] = np.where(brain, w, 0)
        images.append(out)
    deformed = Anatomy(name=anatomy.name, source=anatomy.source, tissues=tissues, t1=images[0], t2=images[1])
    deformed._cache["brain"] = anatomy.brain
    if "vessels" in anatomy._cache:
        deformed._cache["vessels"] = anatomy._cache["vessels"]
    csf = anatomy.csf_fraction.copy()
    pad = tuple(slice(max(0, s.start - 3), min(n, s.stop + 3)) for s, n in zip(box, shape))
    csf[pad] = ndimage.gaussian_filter((tissues[pad] == CSF).astype(np.float32), 0.7)
    deformed._cache["csf"] = csf
    return deformed
