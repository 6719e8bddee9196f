"""A small YOLO-format detection dataset of bright blobs on brain slices, for tests and benchmarks.

The backgrounds are axial slices of the SRI24 atlas (T1 / T2 / PD as the three channels, read-only
from the shared data folder) when it is present, else a procedural head phantom. Each image gets
0-2 "lesions": smooth bright ellipses that raise the T2-like channels, as oedema does on FLAIR/T2.
Files follow the project's dataset layout (``images/<split>/<case>_z<kkk>.png`` + YOLO ``labels``)
so every detector function can run on it; the boxes are the lesions' tight pixel-XYXY boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .. import atomic, paths
from ..boxes import component_boxes_xyxy, xyxy_to_yolo

SPLITS = ("train", "val", "test")


def _atlas_slices(size: int) -> list[np.ndarray] | None:
    """Axial slices (uint8 (H, W, 3), H = W = size) of SRI24 spgr/late/erly, or None without the atlas."""
    d = paths.sri24_dir()
    files = [d / f"{n}.nii.gz" for n in ("spgr", "late", "erly")]
    if not all(f.is_file() for f in files):
        return None
    import nibabel as nib

    vols = []
    for f in files:
        v = np.asarray(nib.load(str(f)).dataobj, dtype=np.float32)[..., 0][:, ::-1, :]
        nz = v[v > 0]
        hi = np.percentile(nz, 99.5) if nz.size else 1.0
        vols.append(np.clip(v / hi * 255.0, 0, 255))
    vol = np.stack(vols, axis=-1)  # (X, Y, Z, 3)
    out = []
    for k in range(45, 125, 2):
        img = np.swapaxes(vol[:, :, k], 0, 1)  # image = vol[:, :, k].T, see boxes.axial_slice
        out.append(_fit(img, size).astype(np.uint8))
    return out


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """Crop/pad an (H, W, 3) image to (size, size, 3) around its centre."""
    h, w = img.shape[:2]
    out = np.zeros((size, size, img.shape[2]), img.dtype)
    ys, xs = max(0, (h - size) // 2), max(0, (w - size) // 2)
    yd, xd = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[yd:yd + ch, xd:xd + cw] = img[ys:ys + ch, xs:xs + cw]
    return out


def _phantom(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural head slice: a textured ellipse, uint8 (size, size, 3)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    a, b = size * rng.uniform(0.30, 0.40), size * rng.uniform(0.36, 0.45)
    inside = ((xx - size / 2) / a) ** 2 + ((yy - size / 2) / b) ** 2 <= 1
    base = np.array([110, 70, 90], np.float32) * rng.uniform(0.8, 1.2, 3)
    img = inside[..., None] * (base + rng.normal(0, 12, (size, size, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def _add_lesion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paste one bright ellipse inside the head; returns its bool mask (H, W)."""
    h, w = img.shape[:2]
    brain = np.argwhere(img.max(axis=2) > 20)
    cy, cx = brain[rng.integers(len(brain))] if len(brain) else (h // 2, w // 2)
    ry, rx = rng.uniform(5, 22, 2)
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    r = (u / rx) ** 2 + (v / ry) ** 2
    mask = r <= 1
    weight = np.clip(1.3 - r, 0, 1)[..., None] * mask[..., None]
    boost = np.array([rng.uniform(10, 60), rng.uniform(90, 150), rng.uniform(90, 150)], np.float32)
    img[:] = np.clip(img.astype(np.float32) + weight * boost, 0, 255).astype(np.uint8)
    return mask


def write_synthetic_yolo_dataset(out: str | Path, cases_per_split: dict[str, int] | None = None,
                                 slices_per_case: int = 16, size: int = 240, seed: int = 0,
                                 empty_fraction: float = 0.25) -> Path:
    """Write a YOLO detection dataset to ``out``; returns the path of its ``dataset.yaml``.

    Images are uint8 RGB (size, size, 3) PNGs named ``<case>_z<kkk>.png``; labels hold one
    ``0 cx cy w h`` line per lesion (empty file for a lesion-free slice), as ``prepare`` writes them.
    """
    out = Path(out)
    cases_per_split = cases_per_split or {"train": 6, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    atlas = _atlas_slices(size)
    n = 0
    for split in SPLITS:
        for c in range(cases_per_split.get(split, 0)):
            case = f"SYN-{split}-{c:03d}"
            for z in range(slices_per_case):
                img = atlas[rng.integers(len(atlas))].copy() if atlas else _phantom(rng, size)
                n_les = 0 if rng.random() < empty_fraction else (1 if rng.random() < 0.8 else 2)
                mask = np.zeros((size, size), bool)
                for _ in range(n_les):
                    mask |= _add_lesion(img, rng)
                boxes, _ = component_boxes_xyxy(mask, min_pixels=10)
                lines = [f"0 {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"
                         for cx, cy, bw, bh in xyxy_to_yolo(boxes, size, size)]
                stem = f"{case}_z{z:03d}"
                atomic.save_png(img, out / "images" / split / f"{stem}.png")
                atomic.write_text(out / "labels" / split / f"{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
                n += 1
    data = {"path": str(out.resolve()), "names": {0: "tumour"}}
    data.update({s: f"images/{s}" for s in SPLITS if cases_per_split.get(s, 0)})
    atomic.write_text(out / "dataset.yaml", yaml.safe_dump(data, sort_keys=False))
    return out / "dataset.yaml"
