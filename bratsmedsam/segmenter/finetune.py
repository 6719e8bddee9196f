"""Mask-decoder fine-tuning on cached image embeddings (image and prompt encoders frozen).

Recipe (MedSAM's): loss ``monai.losses.DiceCELoss(sigmoid=True, squared_pred=True)`` (= MONAI ``DiceLoss`` +
``BCEWithLogitsLoss`` on our one-channel logits) plus, as in LiteMedSAM's training, the IoU head's MSE against the
mask's actual IoU (:func:`iou_head_loss`, ``iou_loss_weight``),
AdamW(lr 1e-4, weight decay 0.01). The loss is computed on the decoder logits brought back to the slice's
own ``(H, W)`` grid with the family's post-processing, so training sees exactly the frame inference uses.

Prompts: ONE BOX PER CONNECTED TUMOUR COMPONENT (the manifest's ``boxes_xyxy``), target = the tumour pixels
inside that box. Why: the detector is trained on the same per-component boxes (labels/*.txt) and the
pipeline segments each detected box and unites the masks, so the decoder is trained on the unit it is
prompted with. Each box is jittered every epoch: each side moves independently by up to
``jitter_frac`` of the box size plus ``jitter_px`` pixels, which covers shifts, shrinking and growing.
Neighbour samples (``neighbour_samples``, on by default for one region): also the volume-aware propagation's
prompt - a slice with the box of the slice above or below grown by 3 px - and every tumour-free slice ``prepare``
kept with its nearest tumour slice's boxes and an EMPTY target (:func:`samples.neighbour_samples`). Without them
the decoder only ever sees boxes around tumour: on the real case (paper's stack), propagated from a GT seed, it
kept drawing ~1,000 px masks through healthy slices to the volume's edge both ways (predicted IoU 0.7-0.8);
zero-shot stopped 20 and 11 slices past its lower and upper ends; with them 1 and 34 past (README).
Intensity augmentation (``intensity_variants`` K > 0): the image encoder is frozen and its embeddings are
cached, so an intensity transform cannot be applied on the fly; instead each training slice is also encoded in K
fixed random intensity variants (:func:`samples.augment_intensity`: gamma, contrast, noise, bias ramp) and every
epoch each sample draws one of its K + 1 embeddings. Cost: K extra encoder passes per training slice, once.
Loose boxes (``loose_frac``, on by default): half the samples of each epoch have their jittered box pushed outwards
(:func:`samples.loosen_box`), as a weak detector's or a grown propagation prompt's box sits around a tumour.
Validation: GT boxes (no jitter), masks of a slice united, slice Dice against the slice's whole mask; one region
with ``loose_frac`` > 0 also the same boxes padded by :data:`LOOSE_VAL_PAD`, the model selected on the mean of the
two (:func:`loose_val_scores`: a decoder that fills its box loses); epoch 0 in the history is the zero-shot model. When the validation split holds real cases (ids outside the
synthetic range ``BraTS-GLI-9xxxx``), the model is selected on those alone (``select_on="auto"``): synthetic
validation slices are easy to overfit to and say little about real scans. ``patience`` stops the run after that
many epochs without a better validation Dice (early stopping); ``best.pt`` is the selected model either way.
Weight mixes (``mix``, on by default): after the epochs, the decoder's weights are set to ``(1 - a) * zero-shot +
a * best trained epoch`` for each share ``a`` (:func:`mix_states`; weight-space ensembling, as WiSE-FT does for
fine-tuned zero-shot models) and validated like an epoch; a mix that beats every epoch and zero-shot is kept. On
the demo's synthetic cases every trained epoch lost to zero-shot on loose boxes while the half-and-half mix beat
both on GT and loose boxes, and the real case held out (README "Weight mixes").

Regions (``regions``, e.g. WT, TC, ET, on a WT dataset with label maps): the regions are heads (mask-token slots,
``Segmenter.slots``) of ONE mask decoder, trained together from the same cached embeddings (one encoder pass per
slice) and one decoder pass per sample: a WT component's box gets the loss (Dice + BCE, plus the IoU-head term)
on every head, each against its region inside that box; an inner region's own box on its own head only
(``samples.make_samples``). Validation scores every region with its own GT boxes and each inner region with the
WT boxes too; the best epoch is the best mean of those scores. One checkpoint: the decoder (upstream's state dict)
and ``meta["region_slots"]``. Under torchrun the heads module is what DDP wraps, as the decoder is in one region.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..offline import PROJECT_ROOT
from . import distributed
from .distributed import DistEnv
from .model import heads_decoder, union_masks
from .samples import (Sample, SplitData, augment_intensity, jitter_box, load_split, loosen_box, make_samples,
                      neighbour_samples, pad_boxes)

SELECT_ON = ("auto", "all", "real")


def default_cache_dir() -> Path:
    return PROJECT_ROOT / "runs" / "cache" / "embeddings"


#: the loose-box augmentation's default reach (``FinetuneConfig.loose_frac``) and the share of samples it applies to
LOOSE_FRAC = 0.3
LOOSE_SHARE = 0.5
#: validation's loose prompts: each GT box padded on every side by this fraction of its longer side
LOOSE_VAL_PAD = 0.15
#: validation slices scored together (their embeddings stay in the segmenter's memory cache between prompt sets)
VAL_CHUNK = 32
#: weight mixes tried after training (``FinetuneConfig.mix``): the share of the best trained epoch's weights in
#: ``(1 - a) * zero-shot + a * trained`` (:func:`mix_states`)
MIX = (0.25, 0.5, 0.75)


@dataclass
class FinetuneConfig:
    base: str = "litemedsam"
    checkpoint: str | None = None
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    max_train_slices: int | None = None
    max_val_slices: int | None = None
    device: str | None = None
    seed: int = 0
    jitter_frac: float = 0.1  # each box side moves by up to this fraction of the box size ...
    jitter_px: float = 3.0  # ... plus up to this many pixels (both directions: shift, shrink, grow)
    cache_dir: str | None = field(default_factory=lambda: str(default_cache_dir()))
    cache_max_mb: float | None = None  # cap of the disk cache (None: unbounded)
    n_overlays: int = 4
    resume: bool | str = False  # True: out_dir/last.pt; a path: that checkpoint
    embeddings: str = "cache"  # "cache" (memory + disk, float16) or "on-the-fly" (encode every step: GPU option)
    regions: tuple[str, ...] | None = None  # None: the dataset's one region; ("WT", "TC", "ET"): one head each
    dist_timeout_s: float = 1800.0  # torchrun: a collective waiting longer than this ends the job with an error
    progress: bool = True
    intensity_variants: int = 0  # extra encoded intensity variants per training slice (0: none)
    patience: int | None = None  # stop after this many epochs without a better val Dice (None: run every epoch)
    iou_loss_weight: float = 1.0  # weight of the IoU head's MSE term (0: masks only, the IoU head is left as it was)
    select_on: str = "auto"  # val slices the model is selected on: "auto" (real cases if any), "all", "real"
    # also the propagation's prompt: a neighbour slice's box + 3 px, tumour-free slices with empty targets
    # (samples.neighbour_samples; one region only). On by measurement: README "Fine-tuning judged on the real case"
    neighbour_samples: bool = True
    # loose boxes: each epoch, LOOSE_SHARE of the samples get their (jittered) box pushed outwards by up to this
    # fraction of each side (samples.loosen_box; 0: off). Validation scores GT boxes and boxes padded by
    # LOOSE_VAL_PAD (one region). Why: a decoder fine-tuned on the demo's synthetic cases without them filled loose
    # boxes on the real case (slice Dice, GT boxes padded 15 %: zero-shot 0.832, fine-tuned 0.742), so the
    # volume-aware chain, prompted by a weak detector's wide boxes, drew 2-3x the tumour (3D Dice 0.887 -> 0.596)
    loose_frac: float = LOOSE_FRAC
    # weight mixing: after the epochs, the decoder's weights interpolated between zero-shot's and the best trained
    # epoch's at these shares of the trained ones, each validated like an epoch; a mix that beats every epoch (and
    # zero-shot) becomes best.pt (``()``: off)
    mix: tuple[float, ...] = MIX


def slice_dices(seg, data: SplitData, progress: bool = False,
                chunk: int = 32, region: str | None = None) -> tuple[list[float], list[np.ndarray]]:
    """Slice Dice with ground-truth boxes: masks of a slice united, compared with the slice's whole mask
    (``region``: that region's decoder; ``data`` then holds its masks and boxes, ``SplitData.region``)."""
    from ..metrics import dice

    kw = {} if region is None else {"region": region}
    results = []
    for i in range(0, len(data.images), chunk):  # chunks keep the stacked embeddings small
        results += seg.segment_many(data.images[i:i + chunk], data.boxes[i:i + chunk], progress=progress, **kw)
    preds = [union_masks(r.masks, m.shape) for r, m in zip(results, data.masks)]
    return [dice(p, m) for p, m in zip(preds, data.masks)], preds


def loss_fn():
    """MedSAM's loss from MONAI: ``DiceCELoss`` with a sigmoid and squared predictions in the Dice denominator.
    On a one-channel output (ours: ``(B, 1, H, W)`` logits) its CE term is ``BCEWithLogitsLoss``, so this is
    ``DiceLoss(sigmoid=True, squared_pred=True) + BCEWithLogitsLoss()`` with weights 1 and 1, mean-reduced
    (tests/test_loss.py checks it on a hand-computed example)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean", lambda_dice=1.0, lambda_ce=1.0)


def iou_head_loss(logits, target, iou_pred):
    """MSE between the decoder's predicted IoU and the IoU its mask (logits > 0) actually has with ``target``.

    The IoU head reads the decoder transformer's IoU token; fine-tuning the transformer on the masks alone moves
    that token under a head that no longer matches it, while the volume-aware propagation and the uncertainty score
    read the predicted IoU. LiteMedSAM and SAM train the head with this term. Measured on the held-out real case
    (README, "Fine-tuning judged on the real case"): no change in any Dice against the masks-only loss."""
    import torch

    with torch.no_grad():
        pred, true = logits > 0, target > 0.5
        dims = tuple(range(1, pred.dim()))
        inter = (pred & true).sum(dims).float()
        union = (pred | true).sum(dims).float()
        actual = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return torch.nn.functional.mse_loss(iou_pred.float().reshape(-1), actual.reshape(-1))


def train_epoch(seg, decoder, samples: list[Sample], get_embedding, optimizer, cfg: FinetuneConfig,
                rng: np.random.Generator, scaler=None, criterion=None, progress: bool = False, desc: str = "",
                env: DistEnv | None = None, stats: dict | None = None, heads: tuple[str, ...] | None = None) -> float:
    """One pass over ``samples`` in global batches of ``cfg.batch_size``; returns the mean loss over all samples
    (all ranks).

    ``decoder`` is ``seg.net.mask_decoder`` or its DDP wrapper; ``get_embedding(slice_idx)`` returns the
    ``(1, 256, 64, 64)`` embedding on the device. Decoding loops over the samples of a batch (each has its
    own image embedding) and accumulates gradients. Under DDP every rank draws the same order and the same box
    jitter from ``rng`` (seeded alike on every rank) and decodes only its part of each batch
    (:func:`distributed.split_batch`); each loss is weighted ``world / len(batch)`` and DDP averages over the
    ranks once per batch, so the step equals one process's on the whole batch, up to float summation order.
    ``stats`` (optional) receives ``samples_per_rank``: how many samples each rank decoded.
    ``heads`` (regions): ``decoder`` is then ``model.heads_decoder`` (or its DDP wrapper) emitting those regions'
    heads in that order, and each sample's loss is the sum over the heads it has a target for (``Sample.targets``);
    the other heads join the graph with weight 0, so every rank uses the same parameters in every pass."""
    import contextlib

    import torch
    from tqdm import tqdm

    env = env or DistEnv()
    criterion = criterion or loss_fn()
    dev = seg.device
    amp = dev.type == "cuda"
    decoder.train()
    order = rng.permutation(len(samples))
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    total, count = 0.0, 0
    for batch in tqdm(batches, desc=desc or "train", unit="batch", disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        # Every rank draws the whole batch's jitter: the same random stream as one process.
        boxes = [jitter_box(samples[si].box, *samples[si].target.shape, rng, cfg.jitter_frac, cfg.jitter_px)
                 for si in batch]
        if cfg.loose_frac > 0:
            loose = rng.random(len(batch)) < LOOSE_SHARE
            boxes = [loosen_box(b, *samples[si].target.shape, rng, cfg.loose_frac) if lo else b
                     for b, si, lo in zip(boxes, batch, loose)]
        # Which embedding each sample uses: 0 the slice as it is, v >= 1 its v-th intensity variant.
        variants = (rng.integers(0, cfg.intensity_variants + 1, len(batch)) if cfg.intensity_variants > 0
                    else np.zeros(len(batch), int))
        mine = distributed.split_batch(list(range(len(batch))), env)
        weight = env.world / len(batch)
        if not mine:  # fewer samples than ranks: still join the gradient sync, contributing nothing
            mine, weight = [0], 0.0
        for n, pos in enumerate(mine):
            s = samples[batch[pos]]
            h, w = s.target.shape
            frame = seg.fam.frame(h, w)
            bm = torch.from_numpy(seg.fam.boxes_to_model(boxes[pos][None], frame)).to(dev)
            sync = n == len(mine) - 1 or not hasattr(decoder, "no_sync")
            ctx = contextlib.nullcontext() if sync else decoder.no_sync()
            with ctx:
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                    with torch.no_grad():  # frozen prompt encoder
                        sparse, dense = seg.net.prompt_encoder(points=None, boxes=bm[:, None, :], masks=None)
                        pe = seg.net.prompt_encoder.get_dense_pe()
                    emb = get_embedding(s.slice_idx, int(variants[pos])) if variants[pos] else get_embedding(s.slice_idx)
                    if heads:
                        logits, iou_pred = decoder(emb, pe, sparse, dense)
                    else:
                        logits, iou_pred = decoder(image_embeddings=emb, image_pe=pe,
                                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                   multimask_output=False)
                targets = {r: s.targets[r] for r in heads if r in s.targets} if heads else {None: s.target}
                raw = 0.0
                for c, r in enumerate(heads or (None,)):
                    if r not in targets:  # a head without a target here: in the graph, with no weight
                        raw = raw + 0.0 * (logits[:, c].float().sum() + iou_pred[:, c].float().sum())
                        continue
                    out = seg.fam.logits_to_original(logits[:, c:c + 1].float(), frame)
                    target = torch.from_numpy(targets[r][None, None].astype(np.float32)).to(dev)
                    raw = raw + criterion(out, target)
                    if cfg.iou_loss_weight:
                        raw = raw + cfg.iou_loss_weight * iou_head_loss(out, target, iou_pred[:, c:c + 1])
                loss = raw * weight
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            if weight:
                total += float(raw.detach())
                count += 1
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    per_rank = [0.0] * env.world
    per_rank[env.rank] = count
    total, *per_rank = distributed.all_sum(env, [total, *per_rank], dev, "the epoch's loss")
    if stats is not None:
        stats["samples_per_rank"] = [int(c) for c in per_rank]
    return total / max(sum(per_rank), 1)


def mix_states(zero: dict, tuned: dict, share: float) -> dict:
    """``(1 - share) * zero + share * tuned``, tensor by tensor, for two state dicts of one module (a tensor that is
    not floating point, e.g. a counter, is taken from ``tuned``)."""
    if not 0.0 <= share <= 1.0:
        raise UserError(f"a weight mix's share of the trained weights must lie in [0, 1], got {share}")
    if zero.keys() != tuned.keys():
        raise UserError("cannot mix two decoders with different parameters")
    return {k: (zero[k] + share * (tuned[k] - zero[k]) if tuned[k].is_floating_point() else tuned[k].clone())
            for k in tuned}


def _meta(seg, info: dict, dataset_dir, cfg: FinetuneConfig, epoch: int, metrics: dict, regions=None,
          mix: float | None = None) -> dict:
    from ..dataset import dataset_stacks

    meta = {"base": seg.family, "base_checkpoint": str(seg.base_checkpoint), "base_checkpoint_sha256": seg.base_sha256,
            "preprocess": seg.fam.preprocess_id, "channels": list(dataset_stacks(info).segmenter),
            "region": info.get("region"), "dataset": str(Path(dataset_dir).resolve()),
            "box_prompt": "one box per tumour component; target = tumour pixels inside the box",
            "epoch": epoch, "metrics": metrics, "config": asdict(cfg),
            # the samples its weights trained on (a multi-region run has none; epoch 0 is zero-shot's weights):
            # ``pipeline.propagation_margin`` reads it
            "neighbour_samples": bool(cfg.neighbour_samples and not regions and epoch > 0)}
    if mix is not None:  # weights = (1 - mix) * zero-shot + mix * epoch ``epoch``'s
        meta["mix"] = mix
    if regions:
        meta["regions"] = list(regions)
        meta["region_slots"] = {r: seg.slots[r] for r in regions}
        meta["box_prompt"] += ("; regions are heads of one decoder: a WT box trains every head (its region inside "
                               "the box), an inner region's own box its own head")
    return meta


def _regions(cfg: FinetuneConfig, info: dict, dataset_dir, env) -> tuple[str, ...] | None:
    """The validated region list (WT first, BraTS order) or None for a single-region run."""
    from ..regions import REGIONS, parse_region

    if not cfg.regions:
        return None
    regions = tuple(dict.fromkeys(parse_region(r) for r in cfg.regions))
    regions = tuple(r for r in REGIONS if r in regions)
    if regions == (info.get("region"),):
        return None
    if info.get("region") != "WT" or "WT" not in regions:
        raise UserError(f"region heads {', '.join(regions)} need a WT dataset with WT among them (the inner regions "
                        f"are prompted with WT boxes); {dataset_dir} was prepared for {info.get('region')}")
    if not info.get("labelmaps"):
        raise UserError(f"{dataset_dir} has no label maps (prepared by an older version): run prepare again to train "
                        "region heads")
    return regions


def _val_scores(seg, val: SplitData, regions) -> dict[str, float]:
    """Validation slice Dice per region with its own GT boxes (``<region>``), and per inner region with the WT GT
    boxes (``<region>@WT``, on every WT slice: an empty prediction where the region is absent scores 1)."""
    out = {}
    for r in regions:
        own = val.region(r)
        idx = [i for i, b in enumerate(own.boxes) if len(b)]
        if idx:
            out[r] = float(np.mean(slice_dices(seg, own.subset(idx).region(r), region=r)[0]))
        if r != "WT":
            parent = SplitData(val.keys, val.images, val.regions[r][0], val.boxes, val.names)
            out[f"{r}@WT"] = float(np.mean(slice_dices(seg, parent, region=r)[0]))
    return out


def loose_val_scores(seg, val: SplitData) -> dict[str, float]:
    """Validation slice Dice of one region with its GT boxes (``gt``) and with those boxes padded by
    :data:`LOOSE_VAL_PAD` (``loose``): a model is selected on their mean, so an epoch that learnt to fill its box
    loses to one that outlines the tumour inside it. Both prompt sets of a chunk run back to back, so the second
    finds the chunk's embeddings in the segmenter's memory cache (no second disk read or encoder pass)."""
    gt, loose = [], []
    for i in range(0, len(val.images), VAL_CHUNK):
        part = val.subset(range(i, min(i + VAL_CHUNK, len(val.images))))
        padded = [pad_boxes(b, *m.shape, LOOSE_VAL_PAD) for b, m in zip(part.boxes, part.masks)]
        gt += slice_dices(seg, part)[0]
        loose += slice_dices(seg, SplitData(part.keys, part.images, part.masks, padded, part.names))[0]
    return {"gt": float(np.mean(gt)), "loose": float(np.mean(loose))}


def _selection_set(val: SplitData, select_on: str, dataset_dir) -> SplitData:
    """The validation slices the model is selected on: the real cases' when ``select_on`` is "real", or "auto"
    and the split has some; else all of them."""
    from ..sample_data import is_synthetic_case

    real = [i for i, n in enumerate(val.names) if not is_synthetic_case(n.rsplit("_z", 1)[0])]
    if select_on == "all" or (select_on == "auto" and not real):
        return val
    if not real:
        raise UserError(f"select_on='real' but the val split of {dataset_dir} has no real case "
                        "(all ids are synthetic BraTS-GLI-9xxxx)")
    return val.subset(real)


def _epochs_since_best(history: list[dict]) -> int:
    """Epochs after the best val Dice in ``history`` (for early stopping on resume)."""
    if not history:
        return 0
    best = max(range(len(history)), key=lambda i: (history[i]["val_dice"], -i))
    return len(history) - 1 - best


def _try_mixes(seg, zero: dict, tuned: dict, epoch: int, shares, validate, best: float, save_best, zero_shot,
               scores_key: str, progress: bool) -> tuple[list[dict], float]:
    """Validate the decoder at each weight mix of zero-shot's and epoch ``epoch``'s weights (``mix_states``); a mix
    better than ``best`` is saved as the best model (``save_best(epoch, metrics, share)``). Returns the mixes' records
    and the best val Dice after them. The decoder is left with the last mix's weights."""
    records = []
    for share in sorted(shares):
        seg.net.mask_decoder.load_state_dict(mix_states(zero, tuned, share))
        seg.net.mask_decoder.eval()
        vd, scores = validate()
        records.append({"mix": share, "epoch": epoch, "val_dice": vd, **({scores_key: scores} if scores else {})})
        if vd > best:
            best = vd
            save_best(epoch, {"val_dice": vd, "zero_shot_val_dice": zero_shot, "mix": share}, share)
        if progress:
            print(f"mix {share:.2f} of epoch {epoch}'s weights: val slice Dice {vd:.4f}  (best {best:.4f})"
                  + "".join(f" {k} {v:.3f}" for k, v in scores.items()))
    return records, best


def train_decoder(dataset_dir, out_dir, cfg: FinetuneConfig) -> dict:
    """Fine-tune the mask decoder of ``cfg.base`` on a prepared dataset. Writes into ``out_dir``: ``best.pt``
    (best val Dice: an epoch, zero-shot's weights or a weight mix), ``last.pt`` (to resume), ``tuned.pt`` (the best
    trained epoch, the mixes' end point), ``history.json``, ``mixes.json``, ``curves.png``, ``overlays/*.png``.
    Returns ``{best_checkpoint, best_val_dice, zero_shot_val_dice, history, mixes}``."""
    import torch

    from ..atomic import write_json
    from ..dataset import load_info
    from .checkpoint import load_decoder, save_decoder
    from ..devices import pick_device
    from .model import load_segmenter
    from .plots import save_curves, save_overlays

    if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UserError(f"epochs must be >= 0, batch size >= 1 and lr > 0, "
                        f"got {cfg.epochs}, {cfg.batch_size}, {cfg.lr}")
    out_dir = Path(out_dir)
    info = load_info(dataset_dir)
    if cfg.embeddings not in ("cache", "on-the-fly"):
        raise UserError(f"embeddings must be 'cache' or 'on-the-fly', got {cfg.embeddings!r}")
    if cfg.select_on not in SELECT_ON:
        raise UserError(f"select_on must be one of {', '.join(SELECT_ON)}, got {cfg.select_on!r}")
    if cfg.intensity_variants < 0 or (cfg.patience is not None and cfg.patience < 1):
        raise UserError(f"intensity variants must be >= 0 and patience >= 1, "
                        f"got {cfg.intensity_variants}, {cfg.patience}")
    if cfg.intensity_variants and cfg.embeddings == "on-the-fly":
        raise UserError("intensity variants are cached embeddings: use them with embeddings='cache'")
    if any(not 0.0 < a < 1.0 for a in cfg.mix):
        raise UserError(f"weight mixes are shares of the trained weights strictly between 0 and 1, got {list(cfg.mix)}")
    env = distributed.dist_env()
    device = distributed.init(env, pick_device(cfg.device), cfg.dist_timeout_s)
    main_rank = env.main
    on_the_fly = cfg.embeddings == "on-the-fly"
    torch.manual_seed(cfg.seed)

    regions = _regions(cfg, info, dataset_dir, env)
    min_box = int((info.get("settings") or {}).get("min_box_pixels", 10))
    neighbours = cfg.neighbour_samples and not regions  # the automatic chain propagates WT (one region) only
    train = load_split(dataset_dir, "train", cfg.max_train_slices, cfg.seed, regions or (), min_box,
                       background=neighbours)
    val = load_split(dataset_dir, "val", cfg.max_val_slices, cfg.seed, regions or (), min_box)
    if not train.images or not val.images:
        raise UserError(f"{dataset_dir} has {len(train.images)} train and {len(val.images)} val tumour slices: "
                        "fine-tuning needs both (prepare more cases)")
    samples = make_samples(train, regions)
    if neighbours:
        samples += neighbour_samples(train)
    val = _selection_set(val, cfg.select_on, dataset_dir)
    # Memory-only caching must hold every training slice; a disk cache keeps memory bounded; on the fly keeps none
    # (every step encodes its slice: for a GPU, where encoding can be cheaper than reading 2 MB from disk).
    cache_dir = None if on_the_fly else cfg.cache_dir
    cache_size = 0 if on_the_fly else (256 if cache_dir else len(train.images) + len(val.images))
    seg = load_segmenter(cfg.base, cfg.checkpoint, device=str(device), cache_dir=cache_dir, cache_size=cache_size,
                         cache_max_mb=cfg.cache_max_mb, regions=regions)
    seg.decoder_backend = "torch"  # the decoder is being trained: validation decodes with its current weights

    def state(module):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    zero_state = state(seg.net.mask_decoder)  # the weights every mix starts from (a resumed run's too)
    for p in seg.net.parameters():
        p.requires_grad_(False)
    params = list(seg.net.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)

    # Fill the cache, the slices split over the ranks (each encodes its share into the shared disk cache;
    # a slice another rank encoded is read from there, or encoded again where the disk is not shared).
    if not on_the_fly:
        todo = [train.images[i] for i in range(env.rank, len(train.images), env.world)] + (
            val.images if main_rank else [])
        for i in range(0, len(todo), 32):  # chunks keep the returned stacks small
            seg.embed(todo[i:i + 32], progress=cfg.progress and main_rank)
        distributed.barrier(env, "the embedding cache fill")

    def variant_image(i: int, v: int) -> np.ndarray:  # deterministic: the same on every rank and every epoch
        return augment_intensity(train.images[i], np.random.default_rng([cfg.seed, i, v]))

    variant_keys: dict[tuple[int, int], str] = {}
    if cfg.intensity_variants:
        from .cache import image_key

        mine = set(range(env.rank, len(train.images), env.world))
        for v in range(1, cfg.intensity_variants + 1):
            pending = []  # this rank's variants not cached yet, encoded 32 at a time (each variant made once)
            for i in range(len(train.images)):
                img = variant_image(i, v)
                variant_keys[i, v] = image_key(img)
                if i in mine and variant_keys[i, v] not in seg.cache:
                    pending.append(img)
                if len(pending) == 32 or (pending and i == len(train.images) - 1):
                    seg.embed(pending, progress=cfg.progress and main_rank)
                    pending = []
        distributed.barrier(env, "the intensity variants' embeddings")

    def get_embedding(i: int, v: int = 0):
        emb = seg.cache.get(variant_keys[i, v] if v else train.keys[i])
        if emb is None:
            emb = seg.embed([variant_image(i, v) if v else train.images[i]])[0]
        return emb[None].to(device, non_blocking=True)

    heads = tuple(regions) if regions else None
    decoder = heads_decoder(seg.net.mask_decoder, [seg.slots[r] for r in heads]) if heads else seg.net.mask_decoder
    if env.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        decoder = DDP(decoder, device_ids=[env.local_rank] if device.type == "cuda" else None,
                      find_unused_parameters=True)  # unused token slots' MLPs (and, unweighted, the IoU head) get none
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None

    history: list[dict] = []
    start_epoch, best, zero_shot = 1, -1.0, None
    resume = out_dir / "last.pt" if cfg.resume is True else (Path(cfg.resume) if cfg.resume else None)
    if resume is not None:
        ck = load_decoder(resume)
        if ck["meta"].get("base_checkpoint_sha256") != seg.base_sha256:
            raise UserError(f"cannot resume from {resume}: it was trained on a different {cfg.base} checkpoint")
        if "region_decoders" in ck or (regions and ck["meta"].get("region_slots") != dict(seg.slots)):
            raise UserError(f"cannot resume from {resume}: its regions' heads {ck['meta'].get('region_slots')} are "
                            f"not this run's {dict(seg.slots) if regions else None} (start a new run)")
        seg.net.mask_decoder.load_state_dict(ck["decoder"])
        if ck.get("optimizer"):
            optimizer.load_state_dict(ck["optimizer"])
        history = list(ck.get("history") or [])
        start_epoch = int(ck["meta"]["epoch"]) + 1
        best = float(ck.get("best_val_dice", -1.0))
        if (out_dir / "best.pt").is_file():  # a weight mix chosen after last.pt was written
            best = max(best, float(load_decoder(out_dir / "best.pt")["meta"]["metrics"]["val_dice"]))
        zero_shot = ck.get("zero_shot_val_dice")

    def checkpoint(path: Path, epoch: int, metrics: dict, mix: float | None = None):
        extra = {"history": history, "best_val_dice": best, "zero_shot_val_dice": zero_shot}
        save_decoder(path, state(seg.net.mask_decoder),
                     _meta(seg, info, dataset_dir, cfg, epoch, metrics, regions, mix),
                     optimizer.state_dict(), extra=extra)

    # The best trained epoch (epoch >= 1) so far, the end point of the weight mixes: tuned.pt (kept for a resume)
    tuned_path = out_dir / "tuned.pt"
    tuned = None  # (val Dice, epoch, decoder weights)
    if resume is not None and tuned_path.is_file():
        ck = load_decoder(tuned_path)
        tuned = (float(ck["meta"]["metrics"]["val_dice"]), int(ck["meta"]["epoch"]), ck["decoder"])

    scores_key = "val_dice_regions" if regions else "val_dice_prompts"

    def validate() -> tuple[float, dict]:
        if not regions:
            if cfg.loose_frac <= 0:
                return float(np.mean(slice_dices(seg, val)[0])), {}
            scores = loose_val_scores(seg, val)
            return float(np.mean(list(scores.values()))), scores
        scores = _val_scores(seg, val, regions)
        return float(np.mean(list(scores.values()))), scores

    if zero_shot is None:
        if main_rank:
            zero_shot, scores = validate()
            best = zero_shot
            history.append({"epoch": 0, "train_loss": None, "val_dice": zero_shot, "seconds": 0.0,
                            **({scores_key: scores} if scores else {})})
            checkpoint(out_dir / "best.pt", 0, {"val_dice": zero_shot, "zero_shot_val_dice": zero_shot})
        if cfg.progress and main_rank:
            print(f"epoch 0 (zero-shot): val slice Dice {zero_shot:.4f} on {len(val.images)} slices")

    criterion = loss_fn()
    since_best = _epochs_since_best(history)
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.patience is not None and since_best >= cfg.patience:
            if cfg.progress and main_rank:
                print(f"early stop before epoch {epoch}: no better val Dice in {since_best} epochs")
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])  # the same on every rank and on resume
        stats: dict = {}
        loss = train_epoch(seg, decoder, samples, get_embedding, optimizer, cfg, rng, scaler, criterion,
                           progress=cfg.progress and main_rank, desc=f"epoch {epoch}/{cfg.epochs}", env=env,
                           stats=stats, heads=heads)
        if main_rank:
            seg.net.mask_decoder.eval()
            vd, scores = validate()
            history.append({"epoch": epoch, "train_loss": loss, "val_dice": vd,
                            "seconds": round(time.perf_counter() - t0, 2), **stats,
                            **({scores_key: scores} if scores else {})})
            metrics = {"val_dice": vd, "train_loss": loss, "zero_shot_val_dice": zero_shot}
            since_best += 1
            if vd > best:
                best, since_best = vd, 0
                checkpoint(out_dir / "best.pt", epoch, metrics)
            if cfg.mix and (tuned is None or vd > tuned[0]):
                tuned = (vd, epoch, state(seg.net.mask_decoder))
                checkpoint(tuned_path, epoch, metrics)
            checkpoint(out_dir / "last.pt", epoch, metrics)
            write_json(out_dir / "history.json", history)
            if cfg.progress:
                per = "".join(f" {k} {v:.3f}" for k, v in scores.items())
                print(f"epoch {epoch}: loss {loss:.4f}  val slice Dice {vd:.4f}  (best {best:.4f}){per}")
        distributed.barrier(env, f"epoch {epoch}'s validation on rank 0")
        since_best = int(distributed.all_sum(env, [since_best if main_rank else 0], device, "early stopping")[0])

    mixes: list[dict] = []
    if main_rank and cfg.mix and tuned is not None:
        mixes, best = _try_mixes(seg, zero_state, tuned[2], tuned[1], cfg.mix, validate,
                                 best, lambda epoch, metrics, share: checkpoint(out_dir / "best.pt", epoch, metrics, share),
                                 zero_shot, scores_key, cfg.progress)
        write_json(out_dir / "mixes.json", mixes)
    result = {"best_checkpoint": str(out_dir / "best.pt"), "best_val_dice": best,
              "zero_shot_val_dice": zero_shot, "history": history, "mixes": mixes}
    if main_rank:
        write_json(out_dir / "history.json", history)
        save_curves(history, out_dir / "curves.png")
        best_seg = load_segmenter(decoder=out_dir / "best.pt", checkpoint=cfg.checkpoint, device=str(device),
                                  cache_dir=cfg.cache_dir)
        best_seg.cache = seg.cache  # same encoder: reuse the embeddings
        n = min(cfg.n_overlays, len(val.images))
        pick = np.linspace(0, len(val.images) - 1, n).round().astype(int) if n else []
        sub = val.subset(pick)
        d, preds = slice_dices(best_seg, sub)
        save_overlays(sub, preds, d, out_dir / "overlays")
    distributed.barrier(env, "rank 0's final overlays")
    distributed.finish(env)
    return result
