"""Encoder backends side by side: PyTorch float32 (the reference) vs OpenVINO float32 vs OpenVINO at the CPU's best
precision, on the same slices in the same run; then what an annotator waits for with each (a prompt on a new
slice, a prompt on an encoded slice, a 3D ROI).

    python benchmarks/bench_encoder.py [--case DIR] [--slices 8] [--deep 21] [--device cpu|cuda]

Prints a table (milliseconds per slice, ratio to PyTorch float32, mean GT-box slice Dice) and writes
runs/benchmarks/bench_encoder.json. With ``--device cuda`` the rows are PyTorch float32 and bf16 autocast on the
GPU (OpenVINO is a CPU path here).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from bratsmedsam.atomic import write_json
    from tumour_slices import tumour_slices
    from bratsmedsam.boxes import RoiIJK, axial_slice, component_boxes_xyxy
    from bratsmedsam.paths import real_cases_dir
    from bratsmedsam.volume import segment_roi
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.backends import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=real_cases_dir() / "BraTS-GLI-00000-000")
    ap.add_argument("--slices", type=int, default=8, help="tumour slices timed per backend")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--deep", type=int, default=21, help="slices in the timed 3D ROI")
    args = ap.parse_args()

    files, wt, study, ks = tumour_slices(args.case, args.slices)
    k_mid = int(np.argmax(wt.sum(axis=(0, 1))))
    ii, jj = np.nonzero(wt[:, :, k_mid])
    box = [int(ii.min()), int(ii.max()), int(jj.min()), int(jj.max())]
    shape = study.channels.shape[:3]

    if args.device == "cpu":
        variants = {"torch f32": dict(backend="torch"), "openvino f32": dict(backend="openvino", precision="f32"),
                    "openvino auto": dict(backend="openvino", precision="auto")}
    else:
        variants = {"torch f32": dict(backend="torch"), "torch bf16 autocast": dict(backend="torch", autocast=True)}
    rows = {}
    for name, kw in variants.items():
        autocast = kw.pop("autocast", False)
        seg = load_segmenter("litemedsam", device=args.device, cache_size=0, **kw)
        name = f"{name} ({seg.encoder.name})"
        x = torch.from_numpy(seg.fam.preprocess(axial_slice(study.channels, ks[0]))[0])[None]
        ctx = torch.autocast(args.device, dtype=torch.bfloat16) if autocast else torch.inference_mode()
        with ctx:
            seg.encoder(x)  # warm-up (compilation, allocator)
            times = []
            for k in ks:
                x = torch.from_numpy(seg.fam.preprocess(axial_slice(study.channels, k))[0])[None]
                t0 = time.perf_counter()
                seg.encoder(x)
                times.append(time.perf_counter() - t0)
        dice = []
        for k in ks:
            mask = axial_slice(wt, k).astype(bool)
            pred = seg.segment(axial_slice(study.channels, k), component_boxes_xyxy(mask, 10)[0]).masks.any(axis=0)
            dice.append(2 * (pred & mask).sum() / max(1, pred.sum() + mask.sum()))
        seg.cache.max_items = 256  # now time what an annotator meets: new slice, encoded slice, a 3D ROI
        flat = RoiIJK.from_slicer([*box, k_mid, k_mid], shape)
        t0 = time.perf_counter()
        segment_roi(study.channels, flat, seg)
        t_new = time.perf_counter() - t0
        t0 = time.perf_counter()
        segment_roi(study.channels, flat, seg)
        t_warm = time.perf_counter() - t0
        half = args.deep // 2
        deep = RoiIJK.from_slicer([box[0] - 5, box[1] + 5, box[2] - 5, box[3] + 5, k_mid - half,
                                   k_mid - half + args.deep - 1], shape)
        t0 = time.perf_counter()
        segment_roi(study.channels, deep, seg)
        t_3d = time.perf_counter() - t0
        rows[name] = {"encoder_ms": 1000 * statistics.median(times), "dice": float(np.mean(dice)),
                      "prompt_new_slice_s": t_new, "prompt_warm_s": t_warm, "roi_3d_s": t_3d,
                      "roi_3d_slices": deep.depth}
    ref = next(iter(rows.values()))
    print(f"{'backend':<44} {'enc ms':>8} {'x ref':>6} {'Dice':>7} {'new s':>7} {'warm s':>7} {f'3D-{args.deep} s':>8}")
    for name, r in rows.items():
        print(f"{name:<44} {r['encoder_ms']:8.0f} {ref['encoder_ms'] / r['encoder_ms']:6.2f} {r['dice']:7.4f} "
              f"{r['prompt_new_slice_s']:7.2f} {r['prompt_warm_s']:7.3f} {r['roi_3d_s']:8.1f}")
    flags = cpu_flags()
    env = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags, "case": files.case_id, "slices": ks}
    out = write_json(OUT / f"bench_encoder_{args.device}.json",
                     {"rows": rows, "speedup_vs_torch_f32": {n: ref["encoder_ms"] / r["encoder_ms"]
                                                            for n, r in rows.items()}, "env": env})
    print(f"-> {out} ({env})")


if __name__ == "__main__":
    main()
