"""Added latency of the BraTS label map (WT + TC + ET) over WT alone, per warm box prompt, interleaved in one run.

    python benchmarks/bench_subregions.py [--case DIR] [--slices 12] [--repeats 5] [--backend auto|torch]

What one interactive prompt costs the server once the slice is encoded (the embedding cached): a flat ROI around the
slice's GT WT box -> ``volume.segment_roi`` -> the result written as NRRD with the study's geometry (as the app
writes it). WT: a WT server's segmenter (one head, token 0). BraTS: the BraTS server's segmenter (WT, TC, ET heads
of the one decoder) through ``subregions.SameBoxRegions``, as the app: the pass that segments WT emits TC and ET
for the same box; clipped to their parents and composed by ``regions.label_map``. Both variants
run on the same slices, alternating prompt by prompt (so load drifts hit both alike); each slice's time is the best
of ``--repeats``; rows give the median over slices in ms and the ratio BraTS / WT. Writes
runs/benchmarks/bench_subregions_<device>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import torch

    from bratsmedsam.atomic import write_json
    from bratsmedsam.boxes import RoiIJK, axial_slice, mask_to_xyxy
    from bratsmedsam.paths import real_cases_dir
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.studies import write_label, write_label_map
    from bratsmedsam.subregions import SameBoxRegions, region_voxels
    from bratsmedsam.volume import segment_roi
    from tumour_slices import tumour_slices

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=real_cases_dir() / "BraTS-GLI-00000-000")
    ap.add_argument("--slices", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", help="decoder/encoder backend: auto (OpenVINO on a CPU) or torch")
    ap.add_argument("--decoder", type=Path, default=None, help="a --regions BraTS checkpoint (default zero-shot)")
    args = ap.parse_args()

    files, wt, study, ks = tumour_slices(args.case, args.slices)
    seg = load_segmenter("litemedsam", device=args.device, decoder=args.decoder, backend=args.backend,
                         cache_size=len(ks) + 8, regions=("WT", "TC", "ET"))
    wt_seg = load_segmenter("litemedsam", device=args.device, decoder=args.decoder, backend=args.backend,
                            cache_size=0, regions=("WT",))  # the same weights as a WT server serves them
    wt_seg.encoder, wt_seg.cache = seg.encoder, seg.cache  # one encoder, one cache: only the decoders differ
    seg.embed([axial_slice(study.channels, k) for k in ks], progress=True)  # warm: every slice encoded
    tmp = Path(tempfile.mkdtemp())
    for s in (seg, wt_seg):  # first use converts/compiles the decoder: outside the timing
        s.segment(axial_slice(study.channels, ks[0]), mask_to_xyxy(axial_slice(wt, ks[0]))[None])

    def roi_of(k):
        x0, y0, x1, y1 = mask_to_xyxy(axial_slice(wt, k)).astype(int)
        return RoiIJK.from_slicer([x0, x1, y0, y1, k, k], wt.shape)

    def wt_only(k):
        res = segment_roi(study.channels, roi_of(k), wt_seg)
        write_label(res.label, study.reference, tmp / "wt.nrrd")
        return res.label

    def brats(k):
        same = SameBoxRegions(seg)
        res = segment_roi(study.channels, roi_of(k), same)
        lm = same.label_map(study.channels, res)
        region_voxels(lm[:, :, res.label.any(axis=(0, 1))])  # as the app reports them
        write_label_map(lm, study.reference, tmp / "brats.nrrd")
        return lm

    times = {"wt": {k: [] for k in ks}, "brats": {k: [] for k in ks}}
    with torch.inference_mode():
        for rep in range(args.repeats):
            for i, k in enumerate(ks):
                order = (("wt", wt_only), ("brats", brats)) if (rep + i) % 2 == 0 else (("brats", brats),
                                                                                        ("wt", wt_only))
                for name, fn in order:
                    t0 = time.perf_counter()
                    out = fn(k)
                    times[name][k].append(time.perf_counter() - t0)
                if rep == 0 and i == 0:
                    assert np.array_equal(np.asarray(out) > 0, wt_only(k))  # the label map's union is the WT mask
    best = {n: np.array([min(v) for v in per.values()]) * 1000 for n, per in times.items()}
    med = {n: float(np.median(v)) for n, v in best.items()}
    ratio = float(np.median(best["brats"] / best["wt"]))
    result = {
        "case": args.case.name, "slices": ks, "repeats": args.repeats, "backend": args.backend,
        "decoder_backend": "openvino" if seg._ov_decoder and wt_seg._ov_decoder else "torch",
        "decoder": str(args.decoder) if args.decoder else "zero-shot",
        "median_ms": med, "ratio_per_slice_median": ratio, "added_ms": med["brats"] - med["wt"],
        "per_slice_ms": {n: [round(float(x), 1) for x in v] for n, v in best.items()},
        "env": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                "torch": torch.__version__},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / f"bench_subregions_{seg.device.type}.json", result)
    print(f"warm flat-ROI prompt, {len(ks)} slices of {args.case.name}, best of {args.repeats}, "
          f"decoder {result['decoder_backend']}, {torch.get_num_threads()} threads:")
    print(f"  WT alone            {med['wt']:8.1f} ms (median over slices)")
    print(f"  BraTS (WT+TC+ET)    {med['brats']:8.1f} ms   added {med['brats'] - med['wt']:.1f} ms, "
          f"ratio {ratio:.2f} (median of per-slice ratios)")


if __name__ == "__main__":
    main()
