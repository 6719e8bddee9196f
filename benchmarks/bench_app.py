"""Latency of the app's volume operations on one study, cold vs warm (embeddings cached).

    python benchmarks/bench_app.py [--case DIR] [--detector WEIGHTS] [--backend auto|torch]

Reference measured in the same run: a flat ROI on a slice whose embedding is cached (decoder only).
Prints a table of seconds and ratios to that reference; writes runs/benchmarks/bench_app_<encoder>.json.
No server: the same bratsmedsam.pipeline calls the infer tasks make, without HTTP.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    import torch

    from bratsmedsam.atomic import write_json
    from bratsmedsam.boxes import RoiIJK
    from bratsmedsam.cases import case_files_in, load_case
    from bratsmedsam.paths import real_cases_dir
    from bratsmedsam.pipeline import detect_and_segment, detector_api, load_study, segment_roi
    from bratsmedsam.regions import region_mask
    from bratsmedsam.segmenter import load_segmenter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=real_cases_dir() / "BraTS-GLI-00000-000")
    ap.add_argument("--detector", type=Path, help="YOLO weights; the pipeline row is skipped without them")
    ap.add_argument("--backend", default="auto", help="encoder backend: auto (OpenVINO on a CPU), openvino, torch")
    args = ap.parse_args()

    files = case_files_in(args.case)
    wt = region_mask(load_case(files, [], with_seg=True).seg, "WT")
    k = int(np.argmax(wt.sum(axis=(0, 1))))
    ii, jj = np.nonzero(wt[:, :, k])
    box = [ii.min(), ii.max(), jj.min(), jj.max()]
    rows = {}
    study, rows["load study (3 modalities)"] = timed(lambda: load_study(files.images["t2f"]))
    seg, rows["load segmenter"] = timed(lambda: load_segmenter(backend=args.backend))
    shape = study.channels.shape[:3]
    flat = RoiIJK.from_slicer([*box, k, k], shape)
    _, rows["flat ROI, cold"] = timed(lambda: segment_roi(study.channels, flat, seg))
    _, ref = timed(lambda: segment_roi(study.channels, flat, seg))
    rows["flat ROI, warm (reference)"] = ref
    deep = RoiIJK.from_slicer([box[0] - 5, box[1] + 5, box[2] - 5, box[3] + 5, k - 3, k + 3], shape)
    _, rows["3D ROI 7 slices, cold"] = timed(lambda: segment_roi(study.channels, deep, seg))
    _, rows["3D ROI 7 slices, warm"] = timed(lambda: segment_roi(study.channels, deep, seg))
    if args.detector:
        det = detector_api().Detector(args.detector)
        _, rows["pipeline (detector+segmenter)"] = timed(lambda: detect_and_segment(study.channels, det, seg))
    print(f"{'operation':<34} {'seconds':>9} {'x warm ROI':>11}")
    for name, s in rows.items():
        print(f"{name:<34} {s:9.3f} {s / ref:11.1f}")
    env = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "cuda": torch.cuda.is_available(), "case": files.case_id, "encoder": seg.encoder.name}
    out = write_json(ROOT / "runs" / "benchmarks" / f"bench_app_{seg.encoder.name}.json",
                     {"seconds": rows, "ratio_to_warm_flat_roi": {n: s / ref for n, s in rows.items()}, "env": env})
    print(f"-> {out} ({env})")


if __name__ == "__main__":
    main()
