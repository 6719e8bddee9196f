"""The fine-tuning data: a split's tumour slices (images, masks, GT boxes) and one training sample per box.

Prompts: one box per connected tumour component (the manifest's ``boxes_xyxy``, inclusive pixel XYXY on the
slice), target = the tumour pixels inside that box; :func:`jitter_box` moves each side of a box every epoch.

Multi-region (``regions`` beyond the dataset's own, from the slices' label maps; the regions are heads of one
decoder): a WT component's box is one sample with a target for EVERY head (each region's pixels inside that box,
empty where the slice has none: what a WT box prompt and the automatic chain ask of every head,
``bratsmedsam.subregions``); an inner region's (TC, ET) own component box is a sample for its own head only (the
interactive "box for one region" prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..boxes import component_boxes_xyxy, expand_xyxy, mask_inside_xyxy


@dataclass
class Sample:
    slice_idx: int  # index into the split's slice list
    box: np.ndarray  # float32 (4,) pixel XYXY (inclusive), the ground-truth component box
    target: np.ndarray  # bool (H, W): tumour pixels inside ``box``
    region: str | None = None  # whose box it is (None: the dataset's one region)
    targets: dict | None = None  # multi-region: {region: bool (H, W) inside ``box``} for each head it trains


@dataclass
class SplitData:
    keys: list  # embedding cache keys, one per slice
    images: list  # uint8 (H, W, 3) per slice
    masks: list  # bool (H, W) per slice
    boxes: list  # float32 (n, 4) pixel XYXY per slice
    names: list  # "<case>_z<kkk>"
    # multi-region: region -> (masks bool (H, W) per slice, own component boxes (n, 4) per slice), from label maps
    regions: dict = field(default_factory=dict)

    def subset(self, idx) -> "SplitData":
        """The slices ``idx`` (in that order), every region with them."""
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return SplitData(pick(self.keys), pick(self.images), pick(self.masks), pick(self.boxes), pick(self.names),
                         {r: (pick(m), pick(b)) for r, (m, b) in self.regions.items()})

    def region(self, region: str | None) -> "SplitData":
        """The same slices with ``region``'s masks and boxes as ``masks`` / ``boxes`` (None: as they are)."""
        if region is None or region not in self.regions:
            return self
        m, b = self.regions[region]
        return SplitData(self.keys, self.images, m, b, self.names, self.regions)


def _select(records, split: str, max_n: int | None, seed: int):
    recs = [r for r in records if r.split == split and r.area > 0 and len(r.boxes_xyxy)]
    if max_n is not None and len(recs) > max_n:
        order = np.random.default_rng(seed).permutation(len(recs))[:max_n]
        recs = [recs[i] for i in sorted(order)]
    return recs


def load_split(dataset_dir, split: str, max_n: int | None, seed: int, regions=(), min_box_pixels: int = 10,
               background: bool = False) -> SplitData:
    """The split's tumour slices; with ``regions`` also each region's masks and component boxes (>=
    ``min_box_pixels``) from the slices' label maps. ``background``: after them, the tumour-free slices ``prepare``
    kept of the same cases (empty masks, no boxes: :func:`neighbour_samples` prompts them)."""
    from ..dataset import load_manifest, read_image, read_labelmap, read_mask
    from ..regions import region_mask
    from .cache import image_key

    manifest = load_manifest(dataset_dir)
    recs = _select(manifest, split, max_n, seed)
    if background:
        cases = {r.case for r in recs}
        recs += [r for r in manifest if r.split == split and r.area == 0 and r.case in cases]
    images = [read_image(r.segmenter_image) for r in recs]  # in the segmenter's stack
    per_region = {}
    if regions:
        maps = [read_labelmap(r) for r in recs]
        for reg in regions:
            masks = [region_mask(m, reg) for m in maps]
            per_region[reg] = (masks, [component_boxes_xyxy(m, min_box_pixels)[0] for m in masks])
    return SplitData(keys=[image_key(im) for im in images], images=images, masks=[read_mask(r.mask) for r in recs],
                     boxes=[np.asarray(r.boxes_xyxy, np.float32) for r in recs],
                     names=[f"{r.case}_z{r.z:03d}" for r in recs], regions=per_region)


def _box_samples(i: int, mask: np.ndarray, boxes, region: str | None = None) -> list[Sample]:
    """Slice ``i``'s samples on its own ``boxes``: the ``mask`` pixels inside each box (boxes holding none dropped)."""
    out = []
    for b in boxes:
        target = mask_inside_xyxy(mask, b)
        if target.any():
            out.append(Sample(i, b.astype(np.float32), target, region))
    return out


def make_samples(data: SplitData, regions=None) -> list[Sample]:
    """One sample per GT box. ``regions`` None: the dataset's own region (``masks`` / ``boxes``). Otherwise: each
    WT (the first, the dataset's region) box trains every head; each inner region's own box trains its own head
    (module docstring)."""
    if not regions:
        return [s for i, (mask, boxes) in enumerate(zip(data.masks, data.boxes)) for s in _box_samples(i, mask, boxes)]
    out = []
    for reg in regions:
        masks, own = data.regions[reg]
        for i, mask in enumerate(masks):
            for s in _box_samples(i, mask, own[i], reg):
                s.targets = ({r: mask_inside_xyxy(data.regions[r][0][i], s.box) for r in regions} if reg == "WT"
                             else {reg: s.target})
                out.append(s)
    return out


def neighbour_samples(data: SplitData, margin: float = 3.0) -> list[Sample]:
    """The volume-aware propagation's prompt (``volume.propagate``): slice ``z`` prompted with a box from slice
    ``z - 1`` or ``z + 1`` of the same case - each of the neighbour's GT component boxes grown by ``margin`` px -
    target = slice ``z``'s mask inside it (possibly empty: where the tumour moves, the decoder must not fill the
    box). A tumour-free slice (no boxes: ``load_split(background=True)``) is prompted with the boxes of its case's
    nearest tumour slice, target empty: where the tumour has ended the decoder must draw nothing, so that the
    propagation stops. Slices are matched by ``names`` (``<case>_z<kkk>``)."""
    at = {}
    for i, name in enumerate(data.names):
        case, _, z = name.rpartition("_z")
        at[(case, int(z))] = i
    tumour = {}
    for (case, z), i in at.items():
        if len(data.boxes[i]):
            tumour.setdefault(case, []).append(z)
    out = []
    for (case, z), i in at.items():
        h, w = data.masks[i].shape
        if len(data.boxes[i]):
            sources = [at[(case, z + dz)] for dz in (-1, 1) if (case, z + dz) in at and len(data.boxes[at[(case, z + dz)]])]
        elif tumour.get(case):
            sources = [at[(case, min(tumour[case], key=lambda t: (abs(t - z), t)))]]
        else:
            sources = []
        image = np.array([0, 0, w - 1, h - 1], np.float32)
        for j in sources:
            for b in data.boxes[j]:
                grown = expand_xyxy(b, margin, image)  # as volume.propagate grows the last mask's box
                out.append(Sample(i, grown, mask_inside_xyxy(data.masks[i], grown)))
    return out


def jitter_box(box: np.ndarray, height: int, width: int, rng: np.random.Generator, frac: float,
               px: float) -> np.ndarray:
    """Move each side of a pixel-XYXY box independently by ``U(-1, 1) * (frac * side_length + px)``;
    clipped to the image, never inverted."""
    b = np.asarray(box, np.float64)
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    amp = np.array([frac * w + px, frac * h + px, frac * w + px, frac * h + px])
    j = b + rng.uniform(-1, 1, 4) * amp
    j[[0, 2]] = np.clip(j[[0, 2]], 0, width - 1)
    j[[1, 3]] = np.clip(j[[1, 3]], 0, height - 1)
    if j[2] < j[0]:
        j[0] = j[2] = (j[0] + j[2]) / 2
    if j[3] < j[1]:
        j[1] = j[3] = (j[1] + j[3]) / 2
    return j.astype(np.float32)


def loosen_box(box: np.ndarray, height: int, width: int, rng: np.random.Generator, frac: float) -> np.ndarray:
    """Push each side of a pixel-XYXY box outwards by ``U(0, frac) * side_length``, clipped to the image: the loose
    box a weak detector or a grown propagation prompt gives, around a tumour that fills only part of it."""
    b = np.asarray(box, np.float64)
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    j = b + rng.uniform(0, frac, 4) * np.array([-w, -h, w, h])
    j[[0, 2]] = np.clip(j[[0, 2]], 0, width - 1)
    j[[1, 3]] = np.clip(j[[1, 3]], 0, height - 1)
    return j.astype(np.float32)


def pad_boxes(boxes: np.ndarray, height: int, width: int, frac: float) -> np.ndarray:
    """Each pixel-XYXY box grown on every side by ``frac`` times its longer side, clipped to the image."""
    image = np.array([0, 0, width - 1, height - 1], np.float32)
    out = [expand_xyxy(b, frac * max(b[2] - b[0] + 1, b[3] - b[1] + 1), image)
           for b in np.asarray(boxes, np.float32).reshape(-1, 4)]
    return np.asarray(out, np.float32).reshape(-1, 4)


def augment_intensity(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A random intensity variant of a uint8 ``(H, W, 3)`` slice, for encoding extra training embeddings.

    Per channel: a gamma curve (``exp(U(-0.35, 0.35) * strength)``), a contrast scale (``exp(U(-0.15, 0.15) *
    strength)``) and Gaussian noise (sigma ``U(0, 4) * strength`` grey levels); then a smooth multiplicative bias
    across the slice (a random linear ramp of up to +-10 % * strength). Background (0 in every channel, the
    scans' outside) stays 0, so the head's outline is unchanged: what varies is what differs between
    scanners and sites, not the anatomy or the tumour's extent (the target mask is the original one).
    """
    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    fg = image.max(axis=2) > 0
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    gx, gy = rng.uniform(-1, 1, 2) * 0.1 * strength
    bias = 1.0 + gx * (xx / max(w - 1, 1) - 0.5) * 2 + gy * (yy / max(h - 1, 1) - 0.5) * 2
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        gamma = float(np.exp(rng.uniform(-0.35, 0.35) * strength))
        scale = float(np.exp(rng.uniform(-0.15, 0.15) * strength))
        sigma = float(rng.uniform(0, 4) * strength) / 255.0
        ch = np.power(np.clip(img[..., c], 0, 1), gamma) * scale * bias
        out[..., c] = ch + rng.standard_normal((h, w), dtype=np.float32) * sigma
    out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    out[~fg] = 0
    return out
