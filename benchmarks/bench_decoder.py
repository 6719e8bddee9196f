"""Mask decoder on many slices at once vs upstream's one image per call, same embeddings, same boxes, same run.

    python benchmarks/bench_decoder.py [--case DIR] [--slices 32] [--device cpu|cuda] [--repeats 2]

Reference: ``segment_anything``'s ``MaskDecoder`` called once per slice (it repeats one image's embedding per
prompt, so it cannot take boxes of several slices). Ours: ``decode_batched`` with ``--batches`` prompts per pass,
each prompt gathering its own slice's embedding. The embeddings are the real case's tumour slices (encoded once,
outside the timing); boxes are each slice's ground-truth WT box. Rows: milliseconds per box, ratio to the
reference, the largest logit difference to it. Also times ``Segmenter.segment_many`` end to end (masks back at
the slice's resolution) with the default batch vs batch 1. Writes runs/benchmarks/bench_decoder_<device>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes
sys.path.insert(0, str(ROOT))


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import torch

    from bratsmedsam.atomic import write_json
    from tumour_slices import tumour_slices
    from bratsmedsam.boxes import axial_slice, mask_to_xyxy
    from bratsmedsam.paths import real_cases_dir
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.model import decode, decode_batched

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=real_cases_dir() / "BraTS-GLI-00000-000")
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--batches", default="4,8,16,32", help="prompts per decoder pass, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    files, wt, study, ks = tumour_slices(args.case, args.slices)
    images = [axial_slice(study.channels, k) for k in ks]
    boxes = [mask_to_xyxy(axial_slice(wt, k).astype(bool))[None] for k in ks]
    seg = load_segmenter("litemedsam", device=args.device, cache_size=len(ks) + 8)
    dev = seg.device
    emb = seg.embed(images, progress=True).to(dev)
    frames = [seg.fam.frame(*im.shape[:2]) for im in images]
    bm = torch.from_numpy(np.concatenate([seg.fam.boxes_to_model(b, f) for b, f in zip(boxes, frames)])).to(dev)
    n = len(ks)
    net = seg.net

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        ref_out = [decode(net, net.mask_decoder, emb[i:i + 1], bm[i:i + 1])[0] for i in range(n)]

        def upstream():
            for i in range(n):
                decode(net, net.mask_decoder, emb[i:i + 1], bm[i:i + 1])
            sync()

        def batched(b):
            def run():
                outs = []
                for s in range(0, n, b):
                    idx = torch.arange(s, min(n, s + b), device=dev)
                    outs.append(decode_batched(net, emb[idx], idx - s, bm[idx])[0])
                sync()
                return torch.cat(outs)
            return run

        upstream()  # warm-up
        rows = {"upstream MaskDecoder, one slice per call (reference)": (best_of(upstream, args.repeats), 0.0)}
        for b in (int(x) for x in args.batches.split(",")):
            run = batched(b)
            diff = float((run() - torch.cat(ref_out)).abs().max())
            rows[f"decode_batched, {b} slices per pass"] = (best_of(run, args.repeats), diff)
    one = load_segmenter("litemedsam", device=args.device, cache_size=len(ks) + 8, decode_batch=1)
    one.embed(images)
    rows["Segmenter.segment_many, decode_batch 1"] = (best_of(lambda: one.segment_many(images, boxes),
                                                              args.repeats), 0.0)
    rows[f"Segmenter.segment_many, decode_batch {seg.decode_batch} (default)"] = (
        best_of(lambda: seg.segment_many(images, boxes), args.repeats), 0.0)

    ref = next(iter(rows.values()))[0]
    print(f"{n} boxes on {n} slices, device {dev}, {torch.get_num_threads()} threads")
    print(f"{'decoder':<58} {'ms/box':>8} {'x ref':>6} {'max |dlogit|':>13}")
    for name, (s, d) in rows.items():
        print(f"{name:<58} {1000 * s / n:8.1f} {ref / s:6.2f} {d:13.2e}")
    env = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "device": str(dev),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "case": files.case_id,
           "boxes": n}
    out = write_json(OUT / f"bench_decoder_{dev.type}.json",
                     {"ms_per_box": {k: 1000 * s / n for k, (s, _) in rows.items()},
                      "speedup_vs_upstream": {k: ref / s for k, (s, _) in rows.items()},
                      "max_logit_diff": {k: d for k, (_, d) in rows.items()}, "env": env})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
