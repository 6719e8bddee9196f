"""The app's volume operations on one study, cold (nothing encoded) and warm, with the reference encoder (PyTorch
float32) and the default one (OpenVINO at the CPU's precision) in the same run.

    python benchmarks/bench_app.py [--case DIR] [--detector WEIGHTS] [--backends torch,auto]

Rows: flat and 3D ROIs, the automatic pipeline (per-slice: the segmenter on each detected box, then on its mask's
box, and warm also with the paper's one prompt a box; volume-aware: confident detections seed a propagation, the
default) and the active-learning score of one study (the calls the infer and scoring tasks make, without HTTP).
Prints seconds per backend and the ratio reference/default; writes runs/benchmarks/bench_app.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(study, files, wt, backend: str, detector) -> tuple[dict, str]:
    """Seconds per operation with one encoder backend, each on an empty embedding cache where it says cold."""
    from bratsmedsam.boxes import RoiIJK
    from bratsmedsam.pipeline import detect_and_propagate, detect_and_segment
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.uncertainty import study_uncertainty
    from bratsmedsam.volume import segment_roi

    k = int(np.argmax(wt.sum(axis=(0, 1))))
    ii, jj = np.nonzero(wt[:, :, k])
    box = [ii.min(), ii.max(), jj.min(), jj.max()]
    rows = {}
    seg, rows["load segmenter"] = timed(lambda: load_segmenter(backend=backend))
    shape = study.channels.shape[:3]
    flat = RoiIJK.from_slicer([*box, k, k], shape)
    _, rows["flat ROI, cold"] = timed(lambda: segment_roi(study.channels, flat, seg))
    _, rows["flat ROI, warm"] = timed(lambda: segment_roi(study.channels, flat, seg))
    deep = RoiIJK.from_slicer([box[0] - 5, box[1] + 5, box[2] - 5, box[3] + 5, k - 3, k + 3], shape)
    _, rows["3D ROI 7 slices, cold"] = timed(lambda: segment_roi(study.channels, deep, seg))
    _, rows["3D ROI 7 slices, warm"] = timed(lambda: segment_roi(study.channels, deep, seg))
    if detector is not None:
        seg = load_segmenter(backend=backend)  # empty cache: the pipelines and the score below start cold
        _, rows["pipeline (detector+segmenter), cold"] = timed(lambda: detect_and_segment(
            study.channels, detector, seg, detector_channels=study.detector_channels))
        # warm: what the per-slice chain's second prompt a box costs (volume.REFINE_MARGIN) against the paper's one
        _, rows["pipeline per-slice, warm"] = timed(lambda: detect_and_segment(
            study.channels, detector, seg, detector_channels=study.detector_channels))
        _, rows["pipeline per-slice one prompt a box, warm"] = timed(lambda: detect_and_segment(
            study.channels, detector, seg, detector_channels=study.detector_channels, refine=0))
        seg = load_segmenter(backend=backend)
        _, rows["pipeline volume-aware (default), cold"] = timed(lambda: detect_and_propagate(
            study.channels, detector, seg, detector_channels=study.detector_channels))
        seg = load_segmenter(backend=backend)
        _, rows["active-learning score, cold"] = timed(lambda: study_uncertainty(
            study.channels, detector, seg, detector_channels=study.detector_channels))
    return rows, seg.encoder.name


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    import torch

    from bratsmedsam.atomic import write_json
    from bratsmedsam.cases import case_files_in, load_case
    from bratsmedsam.paths import real_cases_dir
    from bratsmedsam.regions import region_mask
    from bratsmedsam.studies import load_study

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=real_cases_dir() / "BraTS-GLI-00000-000")
    ap.add_argument("--detector", type=Path, help="YOLO weights; the pipeline and scoring rows need them")
    ap.add_argument("--backends", default="torch,auto", help="encoder backends, the first is the reference")
    args = ap.parse_args()

    files = case_files_in(args.case)
    wt = region_mask(load_case(files, [], with_seg=True).seg, "WT")
    study, t_load = timed(lambda: load_study(files.images["t2f"]))
    detector = None
    if args.detector:
        from bratsmedsam.detector import Detector

        detector = Detector(args.detector)
    results, names = {}, []
    for backend in args.backends.split(","):
        rows, name = measure(study, files, wt, backend, detector)
        rows["load study (3 modalities)"] = t_load
        results[name] = rows
        names.append(name)
    ref = results[names[0]]
    print(f"{'operation':<38} " + " ".join(f"{n:>22}" for n in names) + f" {'x ' + names[0]:>22}")
    for op in ref:
        print(f"{op:<38} " + " ".join(f"{results[n][op]:22.3f}" for n in names)
              + f" {ref[op] / results[names[-1]][op]:22.1f}")
    env = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "cuda": torch.cuda.is_available(), "case": files.case_id, "detector": str(args.detector)}
    out = write_json(OUT / "bench_app.json",
                     {"seconds": results, "reference": names[0], "env": env})
    print(f"-> {out} ({env})")


if __name__ == "__main__":
    main()
