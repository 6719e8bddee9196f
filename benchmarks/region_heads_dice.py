"""Slice Dice per BraTS region of a segmenter's heads on a prepared dataset's split, three ways of prompting.

    python benchmarks/region_heads_dice.py --data DATASET [--decoder best.pt] [--split test]

"own": each region's own GT component boxes; "same WT box": every head prompted with the GT WT component boxes in
one pass, nested (the interactive WT-box prompt, ``subregions.SameBoxRegions``); "derived": the inner heads
prompted with the boxes of the WT mask's components (``subregions.inner_masks_2d``, the automatic chain). Dice on
the slices holding the region, masks of a slice united. Writes runs/benchmarks/region_heads_dice.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")
sys.path.insert(0, str(ROOT))
REGIONS = ("WT", "TC", "ET")


def main() -> None:
    from bratsmedsam.atomic import write_json
    from bratsmedsam.metrics import dice
    from bratsmedsam.regions import nest
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.model import union_masks
    from bratsmedsam.segmenter.samples import load_split
    from bratsmedsam.subregions import inner_masks_2d

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--decoder", type=Path, default=None, help="a --regions BraTS checkpoint (default zero-shot)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    data = load_split(args.data, args.split, None, 0, REGIONS)
    seg = load_segmenter("litemedsam", decoder=args.decoder, device="cpu", cache_dir=args.cache_dir, regions=REGIONS)
    chunks = range(0, len(data.images), 16)
    same = {r: [] for r in REGIONS}
    for i in chunks:
        got = seg.segment_regions(data.images[i:i + 16], data.boxes[i:i + 16], REGIONS)
        for j in range(len(got["WT"])):
            m = nest({r: union_masks(got[r][j].masks, data.masks[i + j].shape) for r in REGIONS})
            for r in REGIONS:
                same[r].append(m[r])
    own = {}
    for r in REGIONS:
        masks, boxes = data.regions[r]
        res = [x for i in chunks for x in seg.segment_many(data.images[i:i + 16], boxes[i:i + 16], region=r)]
        own[r] = [union_masks(x.masks, m.shape) for x, m in zip(res, masks)]
    derived = inner_masks_2d(seg, data.images, same["WT"])
    out = {}
    for r in REGIONS:
        masks = data.regions[r][0]
        idx = [i for i, m in enumerate(masks) if m.any()]
        row = {"own": own[r], "same WT box": same[r], **({"derived": derived[r]} if r != "WT" else {})}
        out[r] = {k: round(float(np.mean([dice(v[i], masks[i]) for i in idx])), 4) for k, v in row.items()}
        out[r]["slices"] = len(idx)
        print(r, out[r])
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "region_heads_dice.json", {"data": str(args.data), "decoder": str(args.decoder or "zero-shot"),
                                                "dice": out})


if __name__ == "__main__":
    main()
