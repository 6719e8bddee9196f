"""Segmenter benchmark (LiteMedSAM on the sample data).

1. Slice Dice with ground-truth boxes on the held-out test split: zero-shot vs the fine-tuned decoder
   (best epoch by val Dice), same slices, same boxes.
2. Time per fine-tuning sample/epoch on cached embeddings vs re-encoding every slice each step.
3. Interactive latency of one box on a slice whose embedding is cached vs one that must be encoded.

    .venv/bin/python benchmarks/bench_segmenter.py [--data DATASET] [--epochs 5]

Without --data it builds the sample studies + dataset under runs/benchmarks/segmenter_data (once).
Writes runs/benchmarks/segmenter.json. CPU timings are noisy on a shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bratsmedsam.offline import PROJECT_ROOT  # noqa: E402


def _dataset(args) -> Path:
    if args.data:
        return Path(args.data)
    from bratsmedsam.prepare import PrepareConfig, prepare_dataset
    from bratsmedsam.sample_data import write_sample_studies

    root = PROJECT_ROOT / "runs" / "benchmarks" / "segmenter_data"
    if not (root / "studies" / ".complete").exists():
        write_sample_studies(root / "studies", n_cases=4, seed=0)
        (root / "studies" / ".complete").write_text("ok")
    if not (root / "dataset" / "manifest.csv").exists():
        prepare_dataset(root / "studies", root / "dataset", PrepareConfig(), workers=1)
    return root / "dataset"


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    import torch

    from bratsmedsam.atomic import write_json
    from bratsmedsam.segmenter import FinetuneConfig, load_segmenter, train_decoder
    from bratsmedsam.segmenter.finetune import load_split, make_samples, slice_dices, train_epoch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-train-slices", type=int, default=40)
    p.add_argument("--max-val-slices", type=int, default=20)
    p.add_argument("--max-test-slices", type=int, default=20)
    p.add_argument("--timing-samples", type=int, default=8, help="samples in the cached vs re-encoding comparison")
    p.add_argument("--cache-dir", default=str(PROJECT_ROOT / "runs" / "cache" / "embeddings"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = _dataset(args)
    out = PROJECT_ROOT / "runs" / "benchmarks" / "segmenter_run"
    res: dict = {"device": "cpu", "threads": args.threads, "dataset": str(ds)}

    # 1. zero-shot vs fine-tuned, GT boxes, test split (never used for training or model selection)
    cfg = FinetuneConfig(epochs=args.epochs, max_train_slices=args.max_train_slices,
                         max_val_slices=args.max_val_slices, device="cpu", cache_dir=args.cache_dir, progress=True)
    t0 = time.perf_counter()
    fit = train_decoder(ds, out, cfg)
    res["finetune_seconds"] = time.perf_counter() - t0
    test = load_split(ds, "test", args.max_test_slices, 0)
    base = load_segmenter("litemedsam", device="cpu", cache_dir=args.cache_dir)
    tuned = load_segmenter(decoder=fit["best_checkpoint"], device="cpu", cache_dir=args.cache_dir)
    zs_test = float(np.mean(slice_dices(base, test, progress=True)[0]))
    ft_test = float(np.mean(slice_dices(tuned, test)[0]))
    res.update(val_zero_shot=fit["zero_shot_val_dice"], val_best=fit["best_val_dice"], test_zero_shot=zs_test,
               test_finetuned=ft_test, test_slices=len(test.images), epochs=args.epochs,
               history=fit["history"])

    # 2. one pass over the same samples: cached embeddings vs re-encoding each slice at every step
    train = load_split(ds, "train", args.max_train_slices, 0)
    samples = make_samples(train)
    n_all = len(samples)
    samples = samples[: args.timing_samples]
    seg = load_segmenter("litemedsam", device="cpu", cache_dir=args.cache_dir)
    opt = torch.optim.AdamW(seg.net.mask_decoder.parameters(), lr=1e-4, weight_decay=0.01)
    tcfg = FinetuneConfig(batch_size=8, device="cpu", cache_dir=None)
    seg.embed([train.images[s.slice_idx] for s in samples])

    def cached(i):
        return seg.cache.get(train.keys[i])[None]

    def reencode(i):
        x = torch.from_numpy(seg.fam.preprocess(train.images[i])[0])[None]
        with torch.no_grad():
            return seg.net.image_encoder(x)

    t_cached = _median_time(lambda: train_epoch(seg, seg.net.mask_decoder, samples, cached, opt, tcfg,
                                                np.random.default_rng(0)), 2) / len(samples)
    t_reenc = _median_time(lambda: train_epoch(seg, seg.net.mask_decoder, samples, reencode, opt, tcfg,
                                               np.random.default_rng(0)), 1) / len(samples)
    res.update(train_samples_per_epoch=n_all, sec_per_sample_cached=t_cached, sec_per_sample_reencode=t_reenc,
               epoch_seconds_cached=t_cached * n_all, epoch_seconds_reencode=t_reenc * n_all)

    # 3. interactive latency, one box: cached slice vs a slice that has to be encoded first
    img, box = test.images[0], test.boxes[0][:1]
    warm = load_segmenter("litemedsam", device="cpu", cache_dir=None)
    warm.segment(img, box)
    cold = load_segmenter("litemedsam", device="cpu", cache_dir=None, cache_size=0)
    res["latency_cached_s"] = _median_time(lambda: warm.segment(img, box), 5)
    res["latency_uncached_s"] = _median_time(lambda: cold.segment(img, box), 3)

    rows = [
        ("slice Dice, test split, GT boxes: zero-shot", f"{zs_test:.4f}", ""),
        (f"slice Dice, test split, GT boxes: fine-tuned ({args.epochs} ep)", f"{ft_test:.4f}",
         f"{ft_test / max(zs_test, 1e-9):.3f}x"),
        ("slice Dice, val split: zero-shot -> best",
         f"{fit['zero_shot_val_dice']:.4f} -> {fit['best_val_dice']:.4f}", ""),
        ("train s/sample, re-encoding (reference)", f"{t_reenc:.3f}", "1.000x"),
        ("train s/sample, cached embeddings", f"{t_cached:.3f}", f"{t_reenc / t_cached:.1f}x faster"),
        (f"epoch s ({n_all} samples) re-encoding / cached", f"{t_reenc * n_all:.1f} / {t_cached * n_all:.1f}", ""),
        ("one box, uncached slice (reference) s", f"{res['latency_uncached_s']:.3f}", "1.000x"),
        ("one box, cached slice s", f"{res['latency_cached_s']:.3f}",
         f"{res['latency_uncached_s'] / res['latency_cached_s']:.1f}x faster"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"\nLiteMedSAM segmenter benchmark (CPU, {args.threads} threads; shared machine, noisy timings)")
    for name, val, ratio in rows:
        print(f"{name:<{w}}  {val:>18}  {ratio}")
    target = write_json(PROJECT_ROOT / "runs" / "benchmarks" / "segmenter.json", res)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
