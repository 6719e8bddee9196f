"""Detector inference speed on one whole volume: batched ``Detector.predict`` vs one model call per slice.

Reference (measured in the same run): ultralytics ``model.predict`` called once per slice on all 155
slices, the naive loop. Rows report seconds per volume and the speed-up ratio over the reference.
Weights: ``--weights`` (a trained best.pt) or, by default, an untrained model of ``--model``
(speed does not depend on the weights' values). Volume: the real case from the shared data folder
when present, else SRI24-based synthetic slices. Also times ``postprocess_volume``.

    .venv/bin/python benchmarks/bench_detector.py [--weights best.pt] [--model yolov5s] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bratsmedsam import atomic, paths  # noqa: E402
from bratsmedsam.offline import PROJECT_ROOT  # noqa: E402


def volume_slices() -> tuple[str, list[np.ndarray]]:
    """155 uint8 RGB (240, 240, 3) axial slices of one volume, and where they came from."""
    real = paths.real_cases_dir() / "BraTS-GLI-00000-000"
    if real.is_dir():
        from bratsmedsam.boxes import axial_slice
        from bratsmedsam.cases import case_files_in, load_case
        from bratsmedsam.intensity import compose_channels

        case = load_case(case_files_in(real), ("t1c", "t2w", "t2f"), with_seg=False)
        vol = compose_channels(case, ("t1c", "t2w", "t2f"))
        return f"real case {real.name}", [axial_slice(vol, k) for k in range(vol.shape[2])]
    from bratsmedsam.detection.synthetic import _phantom

    rng = np.random.default_rng(0)
    return "procedural phantom", [_phantom(rng, 240) for _ in range(155)]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--model", default="yolov5s")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import torch

    from bratsmedsam.detection.ultra import yolo
    from bratsmedsam.detector import Detector, postprocess_volume

    import os

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    weights = args.weights
    if weights is None:
        weights = PROJECT_ROOT / "runs" / "benchmarks" / f"untrained-{args.model}.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        yolo(args.model).save(weights)
    source, images = volume_slices()
    det = Detector(weights, device=args.device, conf=0.25, imgsz=None if args.weights else args.imgsz)
    nonempty = sum(1 for im in images if im.any())
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]

    def per_slice():
        for im in bgr:
            det.model.predict(im, imgsz=det.imgsz, conf=det.conf, device=det.device, verbose=False)

    det.predict(images[70:74])  # warm-up
    rows = [("per-slice calls (reference)", best_of(per_slice, args.repeats))]
    for bs in (8, 16, 32):
        rows.append((f"Detector.predict batch {bs}", best_of(lambda: det.predict(images, batch_size=bs), args.repeats)))
    boxes = det.predict(images)
    post_s = best_of(lambda: postprocess_volume(boxes), max(args.repeats, 5))

    ref = rows[0][1]
    print(f"detector inference, one volume of {len(images)} slices ({nonempty} non-empty), {source}")
    print(f"weights {weights.name}, imgsz {det.imgsz}, device {det.device}, {torch.get_num_threads()} threads")
    print(f"{'method':<32} {'s/volume':>9} {'ms/slice':>9} {'speed-up':>9}")
    for name, t in rows:
        print(f"{name:<32} {t:9.3f} {1000 * t / len(images):9.1f} {ref / t:9.2f}x")
    print(f"postprocess_volume: {1000 * post_s:.2f} ms per volume ({sum(len(b) for b in boxes)} boxes)")
    out = PROJECT_ROOT / "runs" / "benchmarks" / "bench_detector.json"
    atomic.write_json(out, {
        "source": source, "slices": len(images), "nonempty_slices": nonempty, "weights": str(weights),
        "imgsz": det.imgsz, "device": det.device, "threads": torch.get_num_threads(),
        "host": {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version()},
        "rows": [{"method": n, "seconds_per_volume": t, "speedup_vs_reference": ref / t} for n, t in rows],
        "postprocess_seconds_per_volume": post_s,
    })
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
