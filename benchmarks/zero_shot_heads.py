"""Which zero-shot head should TC and ET start from? Slice Dice of every candidate on a prepared dataset's split.

    python benchmarks/zero_shot_heads.py --data DATASET [--split test]

Each candidate is a mask-token slot of the pretrained decoder (0 = WT's, 1-3 = the multimask tokens) read with
its own hypernetwork MLP (``own``) or with a copy of token 0's (``wt-copy``; the token embeddings stay, so WT's
output is unchanged), prompted with the GT WT component boxes (what a WT box prompt gives every head). Dice per
region on the slices holding it, masks of a slice united. Writes runs/benchmarks/zero_shot_heads.json.
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


def main() -> None:
    from bratsmedsam.atomic import write_json
    from bratsmedsam.metrics import dice
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.model import union_masks, zero_shot_heads
    from bratsmedsam.segmenter.samples import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    data = load_split(args.data, args.split, None, 0, ("WT", "TC", "ET"))
    out = {}
    for mlp in ("own", "wt-copy"):
        seg = load_segmenter("litemedsam", device="cpu", cache_dir=args.cache_dir)
        seg.decoder_backend = "torch"  # the candidates change the weights in place
        if mlp == "wt-copy":
            zero_shot_heads(seg.net.mask_decoder, [1, 2, 3])
        seg.slots = {f"slot{s}": s for s in range(4)}  # every token as a "region" of its own
        seg.regions = tuple(seg.slots)
        res: dict[str, list] = {}
        for i in range(0, len(data.images), 16):
            for r, lst in seg.segment_regions(data.images[i:i + 16], data.boxes[i:i + 16]).items():
                res.setdefault(r, []).extend(lst)
        for reg in ("WT", "TC", "ET"):
            masks = data.regions[reg][0]
            idx = [i for i, m in enumerate(masks) if m.any()]
            for slot, lst in res.items():
                d = [dice(union_masks(lst[i].masks, masks[i].shape), masks[i]) for i in idx]
                out[f"{reg} {slot} {mlp}"] = {"dice": round(float(np.mean(d)), 4), "slices": len(idx)}
                print(f"{reg} {slot} {mlp:8s} {np.mean(d):.4f} ({len(idx)} slices)")
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "zero_shot_heads.json", {"data": str(args.data), "split": args.split, "dice": out})


if __name__ == "__main__":
    main()
