"""BraTS studies -> 2D axial slice dataset (layout in docs/DESIGN.md).

Per case: load and check (:func:`cases.load_case`), normalise and stack three modalities for each model
(:func:`intensity.compose_stacks`), then for each axial slice ``image = vol[:, :, k].T``
(:func:`boxes.axial_slice`) write the RGB PNG in the detector's stack (``images/``, which YOLO reads) and, where
the segmenter's stack differs, in its stack (``segmenter_images/``), the target-region mask PNG, the YOLO label
(one box per 8-connected component of at least ``min_box_pixels`` pixels) and the slice's BraTS label map
(``labelmaps/``: uint8 PNG, 0 / 1 NCR / 2 ED / 3 ET), from which multi-region fine-tuning and evaluation take
every region's masks and boxes.

Slices: every slice with a tumour box is kept; tumour-free slices that show brain are kept up to
``background_ratio`` per tumour slice (per case, evenly spread over the case's tumour-free brain slices);
brain-free slices are dropped, and so are slices whose tumour has only components smaller than
``min_box_pixels`` (their label would call a visible tumour background).

Runs are restartable: every file is written atomically, and a per-case done-marker
(``.done/<case>.json``, written last) records the settings, the input files and the slices written.
A re-run trusts a case only if its marker matches; every other file of the case is rewritten, and files
no marker accounts for are removed before the manifest is written.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .atomic import save_png, write_json, write_text
from .boxes import axial_slice, component_boxes_xyxy, xyxy_to_yolo
from .cases import CaseFiles, check_headers, discover_cases, load_case
from .dataset import COLUMNS, DATA_YAML, INFO, MANIFEST, SPLITS, manifest_row, slice_stem
from .done_markers import DONE_DIR, KINDS, fingerprint, is_trusted, read_marker, remove_case_files, sweep
from .errors import CaseError, UserError
from .intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS, Stacks, compose_stacks, parse_channels
from .regions import parse_region, region_mask
from .splits import SPLIT_RULE, parse_split, split_cases

@dataclass
class PrepareConfig:
    """Settings of ``prepare``. ``background_ratio``: max tumour-free slices kept per tumour slice, per case."""

    detector_channels: tuple[str, str, str] = DEFAULT_DETECTOR_CHANNELS    # images/ (YOLO's)
    segmenter_channels: tuple[str, str, str] = DEFAULT_SEGMENTER_CHANNELS  # segmenter_images/ where it differs
    region: str = "WT"
    min_box_pixels: int = 10
    background_ratio: float = 0.5
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    z_step: int = 1
    overwrite: bool = False
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def validated(self) -> "PrepareConfig":
        """A normalised copy (channel tuples, region upper-case, split tuple); :class:`UserError` if invalid."""
        split = parse_split(self.split)
        if int(self.min_box_pixels) < 1:
            raise UserError(f"min_box_pixels must be >= 1, got {self.min_box_pixels}")
        if not float(self.background_ratio) >= 0:
            raise UserError(f"background_ratio must be >= 0 (tumour-free slices per tumour slice), got {self.background_ratio}")
        if int(self.z_step) < 1:
            raise UserError(f"z_step must be >= 1, got {self.z_step}")
        if not 0 <= float(self.lower_percentile) < float(self.upper_percentile) <= 100:
            raise UserError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower_percentile}, {self.upper_percentile}"
            )
        return replace(
            self, detector_channels=parse_channels(self.detector_channels),
            segmenter_channels=parse_channels(self.segmenter_channels), region=parse_region(self.region),
            min_box_pixels=int(self.min_box_pixels), background_ratio=float(self.background_ratio),
            split=split, seed=int(self.seed), z_step=int(self.z_step), overwrite=bool(self.overwrite),
            lower_percentile=float(self.lower_percentile), upper_percentile=float(self.upper_percentile),
        )

    def output_settings(self) -> dict:
        """The settings a case's slices depend on (the split is checked separately)."""
        d = asdict(self)
        for k in ("split", "seed", "overwrite"):
            d.pop(k)
        d["detector_channels"], d["segmenter_channels"] = list(self.detector_channels), list(self.segmenter_channels)
        return d

    @property
    def stacks(self) -> Stacks:
        return Stacks(tuple(self.detector_channels), tuple(self.segmenter_channels))


def select_slices(target: np.ndarray, brain: np.ndarray, cfg: PrepareConfig) -> tuple[list, list, int]:
    """Choose slices of one case. ``target``: bool ``(X, Y, Z)`` region mask; ``brain``: bool ``(Z,)``.

    Returns ``(tumour, background, n_small)``: ``tumour`` a list of ``(z, boxes_xyxy (n, 4))``,
    ``background`` a list of z, ``n_small`` the tumour slices dropped because no component reached
    ``min_box_pixels``.
    """
    area = target.sum(axis=(0, 1))
    tumour, candidates, n_small = [], [], 0
    for z in range(0, target.shape[2], cfg.z_step):
        if area[z] > 0:
            boxes, _ = component_boxes_xyxy(axial_slice(target, z), cfg.min_box_pixels)
            if len(boxes):
                tumour.append((z, boxes))
            else:
                n_small += 1
        elif brain[z]:
            candidates.append(z)
    n_bg = min(len(candidates), int(math.floor(cfg.background_ratio * len(tumour) + 1e-9)))
    # Evenly spread: the centre of each of n_bg equal runs of the candidates.
    picks = [candidates[int((i + 0.5) * len(candidates) / n_bg)] for i in range(n_bg)] if n_bg else []
    return tumour, picks, n_small


def _rel(kind: str, split: str, stem: str) -> str:
    return f"{kind}/{split}/{stem}.{'txt' if kind == 'labels' else 'png'}"


#: the manifest column of each kind of slice file
_COLUMN = {"images": "image", "segmenter_images": "segmenter_image", "masks": "mask", "labels": "label",
           "labelmaps": "labelmap"}


def _yolo_text(boxes_xyxy: np.ndarray, width: int, height: int) -> str:
    rows = xyxy_to_yolo(boxes_xyxy, width, height)
    return "".join(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in rows)


def check_case(files: CaseFiles, cfg: PrepareConfig) -> str | None:
    """Header-only check of one case for ``prepare`` (files present, 3-D, one shape and affine, a
    segmentation); the reason it is unusable, or None. The data checks run in :func:`prepare_case`,
    before any file of the case is written."""
    try:
        check_headers(files, cfg.stacks.modalities, with_seg=True)
    except CaseError as exc:
        return exc.reason
    return None


def prepare_case(files: CaseFiles, split: str, cfg: PrepareConfig, out: Path) -> dict:
    """Write one case's slices into ``out/<kind>/<split>/`` and its done-marker last.

    Returns ``{"case", "status": "ok"|"skipped", "reason", "rows", "n_tumour", "n_background", "n_small"}``.
    """
    cid = files.case_id
    try:
        case = load_case(files, cfg.stacks.modalities, with_seg=True)
    except CaseError as exc:
        return {"case": cid, "status": "skipped", "reason": exc.reason}
    remove_case_files(out, cid)
    rgb, seg_rgb = compose_stacks(case, cfg.stacks, cfg.lower_percentile, cfg.upper_percentile)  # (X, Y, Z, 3) each
    target = region_mask(case.seg, cfg.region)
    brain = rgb.any(axis=(0, 1, 3))  # (Z,)
    if seg_rgb is not rgb:  # the segmenter's own modalities count as brain too
        brain |= seg_rgb.any(axis=(0, 1, 3))
    tumour, background, n_small = select_slices(target, brain, cfg)
    empty = np.zeros((0, 4), np.float32)
    rows = []
    for z, boxes in sorted(tumour + [(z, empty) for z in background], key=lambda t: t[0]):
        stem = slice_stem(cid, z)
        image = np.ascontiguousarray(axial_slice(rgb, z))  # (H, W, 3)
        mask = np.ascontiguousarray(axial_slice(target, z))  # (H, W)
        h, w = mask.shape
        row = {"case": cid, "z": int(z), "split": split}
        for kind in KINDS:
            row[_COLUMN[kind]] = _rel(kind, split, stem)
        save_png(image, out / row["image"])
        if cfg.stacks.shared:
            row["segmenter_image"] = row["image"]
        else:
            save_png(np.ascontiguousarray(axial_slice(seg_rgb, z)), out / row["segmenter_image"])
        save_png(mask.astype(np.uint8) * 255, out / row["mask"])
        save_png(np.ascontiguousarray(axial_slice(case.seg, z)).astype(np.uint8), out / row["labelmap"])
        write_text(out / row["label"], _yolo_text(boxes, w, h))
        row["boxes_xyxy"] = boxes.astype(np.int64).tolist()
        row["area"] = int(mask.sum())
        rows.append(row)
    marker = {"case": cid, "split": split, "fingerprint": fingerprint(files, cfg), "rows": rows,
              "n_tumour": len(tumour), "n_background": len(background), "n_small": n_small}
    write_json(out / DONE_DIR / f"{cid}.json", marker)
    return {"status": "ok", "reason": None, **marker}


def _manifest_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(manifest_row({k: r[k] for k in COLUMNS}))
    return buf.getvalue()


def _data_yaml(out: Path, counts: dict[str, int]) -> str:
    import yaml

    val = "images/val" if counts.get("val") else "images/train"  # ultralytics needs a non-empty val set
    doc = {"path": str(out), "train": "images/train", "val": val, "test": "images/test", "names": {0: "tumour"}}
    return yaml.safe_dump(doc, sort_keys=False)


def _mapped(fn: Callable, items: list, pool: ProcessPoolExecutor | None, desc: str, progress: bool):
    """Yield ``fn(*item)`` for each item (in completion order), with a tqdm bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="case", disable=not progress or not items)
    try:
        if pool is None:
            for item in items:
                yield fn(*item)
                bar.update(1)
        else:
            futures = [pool.submit(fn, *item) for item in items]
            for fut in as_completed(futures):
                yield fut.result()
                bar.update(1)
    finally:
        bar.close()


def prepare_dataset(
    studies: str | Path, out: str | Path, cfg: PrepareConfig | None = None, workers: int = 1, progress: bool = True
) -> dict:
    """Build the slice dataset of ``studies`` in ``out``; returns the summary (also saved as prepare.json).

    Bad cases are skipped with their reason; :class:`UserError` if no usable case remains.
    """
    start = time.perf_counter()
    cfg = (cfg or PrepareConfig()).validated()
    studies, out = Path(studies).resolve(), Path(out).resolve()
    found = discover_cases(studies)
    if out == studies:
        raise UserError(f"the dataset folder {out} must not be the studies folder")
    by_id = {f.case_id: f for f in found}
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite and (out / DONE_DIR).is_dir():
        shutil.rmtree(out / DONE_DIR)
    for kind in (k for k in KINDS if k != "segmenter_images" or not cfg.stacks.shared):
        for split in SPLITS:
            (out / kind / split).mkdir(parents=True, exist_ok=True)

    markers = {cid: read_marker(out, cid) for cid in by_id}
    trusted = {cid for cid, f in by_id.items() if is_trusted(markers[cid], f, cfg, out)}
    skipped: dict[str, str] = {}
    for f in found:  # 1. cheap header checks, so the split is made over plausible cases
        if f.case_id not in trusted:
            reason = check_case(f, cfg)
            if reason:
                skipped[f.case_id] = reason
    results: dict[str, dict] = {}
    reused: list[str] = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(found) > 1 else None
    try:
        # 2. split by patient and write every case whose marker does not match. A case that fails the
        # data checks while being read is dropped; the split is then redone over the rest, and the few
        # cases whose split changed are written again (the ranking makes the split stable).
        for _ in range(len(found) + 1):
            usable = sorted(cid for cid in by_id if cid not in skipped)
            if not usable:
                reasons = "; ".join(f"{c}: {r}" for c, r in sorted(skipped.items()))
                raise UserError(f"no usable case in {studies} ({len(found)} found): {reasons}")
            splits = split_cases(usable, cfg.split, cfg.seed)
            for c in usable:
                if c not in results and c in trusted and markers[c]["split"] == splits[c]:
                    results[c] = markers[c]
                    reused.append(c)
            jobs = [(by_id[c], splits[c], cfg, out) for c in usable
                    if c not in results or results[c]["split"] != splits[c]]
            if not jobs:
                break
            for res in _mapped(prepare_case, jobs, pool, "writing slices", progress):
                if res["status"] == "ok":
                    results[res["case"]] = res
                else:
                    skipped[res["case"]] = res["reason"]
                    results.pop(res["case"], None)
                    remove_case_files(out, res["case"])
            reused = [c for c in reused if c in results and results[c] is markers[c]]
    finally:
        if pool is not None:
            pool.shutdown()

    used = sorted(results)
    rows = sorted((r for c in used for r in results[c]["rows"]), key=lambda r: (r["case"], r["z"]))
    keep = {r[k] for r in rows for k in _COLUMN.values()}
    removed = sweep(out, keep, set(used))
    splits = {c: splits[c] for c in used}
    slices_per_split = {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS}
    cases_per_split = {s: sum(1 for c in used if splits[c] == s) for s in SPLITS}
    write_text(out / MANIFEST, _manifest_csv(rows))
    write_text(out / DATA_YAML, _data_yaml(out, slices_per_split))
    seconds = time.perf_counter() - start
    written = sum(len(results[c]["rows"]) for c in used if c not in reused)
    info = {
        "detector_channels": list(cfg.detector_channels),    # images/
        "segmenter_channels": list(cfg.segmenter_channels),  # segmenter_images/ (images/ when the same)
        "region": cfg.region,
        "labelmaps": True,  # labelmaps/<split>/<stem>.png beside every mask (all regions of the slice)
        "studies": str(studies),
        "dataset": str(out),
        "settings": {**asdict(cfg), "detector_channels": list(cfg.detector_channels),
                     "segmenter_channels": list(cfg.segmenter_channels), "split": list(cfg.split)},
        "patient_level_split": True,
        "split_rule": SPLIT_RULE,
        "splits": splits,
        "cases_per_split": cases_per_split,
        "slices_per_split": slices_per_split,
        "cases_used": used,
        "cases_skipped": dict(sorted(skipped.items())),
        "cases_reused": reused,
        "n_slices": len(rows),
        "n_tumour_slices": sum(results[c]["n_tumour"] for c in used),
        "n_background_slices": sum(results[c]["n_background"] for c in used),
        "n_small_tumour_slices_dropped": sum(results[c]["n_small"] for c in used),
        "stale_files_removed": removed,
        "version": __version__,
    }
    write_json(out / INFO, info)
    return {**info, "seconds": seconds, "slices_written": written,
            "slices_per_second": written / seconds if seconds > 0 else float("nan")}
