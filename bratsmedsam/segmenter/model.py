"""``Segmenter``: slice image(s) + pixel-XYXY boxes -> binary masks at the original resolution.

The image embedding is computed once per slice (through :class:`EmbeddingCache`). Upstream ``MaskDecoder``
repeats ONE image's embedding once per prompt, so it cannot decode boxes of different slices together;
:func:`decode_batched` runs the same decoder modules with one embedding per prompt (gathered, not repeated), so
the boxes of several slices go through the decoder together (``decode_batch`` prompts per pass).

Regions share ONE mask decoder (the network's own ``mask_decoder``, state-dict compatible with upstream): SAM's
decoder already runs all its mask tokens through the two-way transformer in every pass and gives each token its own
hypernetwork MLP and IoU-head output; only the output upscaling is shared. A region is served by one token slot
(``Segmenter.slots``: WT 0, TC 2, ET 3 by default, recorded in the checkpoint's meta ``region_slots``), so one pass
emits every region's mask for the same box (:meth:`Segmenter.segment_regions`), at the cost of one pass plus a
small MLP and einsum per extra region. WT alone is token 0 with MLP 0: upstream's ``multimask_output=False``.
``segment_many(..., region=...)`` returns one region's head and :meth:`Segmenter.region` gives a view bound to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..devices import pick_device
from ..errors import UserError
from ..regions import SOLID_REGIONS
from .cache import EmbeddingCache, image_key
from ..digest import file_sha256
from .checkpoint import load_base, load_decoder
from .families import FAMILIES, Family, get_family


@dataclass
class SegResult:
    masks: np.ndarray  # bool (n, H, W), original resolution, one per input box
    iou: np.ndarray  # float32 (n,), the model's predicted IoU per mask


def fill_holes(masks: np.ndarray) -> np.ndarray:
    """bool ``(n, H, W)`` masks with each mask's 2D holes filled (``scipy.ndimage.binary_fill_holes``): every
    background pixel that no 4-connected path of background pixels joins to the slice's edge."""
    from scipy import ndimage

    masks = np.asarray(masks, bool)
    return np.stack([ndimage.binary_fill_holes(m) for m in masks]) if len(masks) else masks


#: radius (px) of the disk that closes a solid region's masks before their holes are filled (:func:`close_notches`).
#: Chosen on six synthetic validation cases (three sample sets), GT boxes, zero-shot and fine-tuned (README
#: "Closing notches"): 0 / 3 / 4 / 6 / 8 px.
CLOSE_PX = 3


def close_notches(masks: np.ndarray, radius: int = CLOSE_PX) -> np.ndarray:
    """bool ``(n, H, W)`` masks, each united with its morphological closing by a disk of ``radius`` px
    (``scipy.ndimage.binary_closing``, the mask padded so that the image edge does not erode it): the notches and
    cracks narrower than the disk that a fine-tuned decoder cuts into a solid tumour's mask are filled. A closing
    stays inside the mask's convex hull; ``radius`` 0 returns the masks as they are."""
    from scipy import ndimage

    from ..boxes import mask_to_xyxy

    masks = np.asarray(masks, bool)
    r = int(radius)
    if r <= 0 or not len(masks):
        return masks
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    disk = x * x + y * y <= r * r
    pad = r + 1
    out = masks.copy()
    for m, o in zip(masks, out):
        box = mask_to_xyxy(m)
        if box is None:
            continue
        x0, y0, x1, y1 = box.astype(int)
        crop = (slice(y0, y1 + 1), slice(x0, x1 + 1))  # a closing stays in the mask's box
        o[crop] |= ndimage.binary_closing(np.pad(m[crop], pad), disk)[pad:-pad, pad:-pad]
    return out


def union_masks(masks, shape) -> np.ndarray:
    """bool ``shape``: the union of a result's ``(n, H, W)`` masks (all False when there are none)."""
    m = np.asarray(masks, bool)
    return m.any(axis=0) if m.shape[0] else np.zeros(shape, bool)


#: prompts per decoder pass by device type. CPU: measured (bench_decoder.py, AMX CPU, 2 threads, quiet): 57 ms per
#: box at 4 against 72 ms one slice per call, but 106 ms at 16 (the (n, 32, 256, 256) upscaling outgrows the cache).
#: CUDA: not measured here (no GPU); 32 is an assumption, ``decode_batch=`` overrides it.
DECODE_BATCH = {"cpu": 4, "cuda": 32}

#: each region's mask-token slot in the one decoder when no checkpoint trained it (zero-shot). WT is upstream's
#: single-mask token 0. TC and ET: chosen by measurement (benchmarks/zero_shot_heads.py, the real case's GT WT
#: boxes, slice Dice): with token 0's MLP copied, TC 0.717 / 0.727 / 0.731 and ET 0.609 / 0.615 / 0.620 on slots
#: 1 / 2 / 3 (their own pretrained multimask MLPs: TC <= 0.711, ET <= 0.593; token 0 itself: TC 0.718, ET 0.600).
ZERO_SHOT_SLOTS = {"WT": 0, "TC": 2, "ET": 3}


def zero_shot_heads(decoder, slots: Sequence[int]) -> None:
    """Give the token ``slots`` of ``decoder`` token 0's hypernetwork MLP (in place; slot 0 itself untouched): the
    zero-shot inner heads (measured above: better than their own multimask MLPs). The token embeddings are never
    changed: through self-attention they would change WT's output."""
    import torch

    with torch.no_grad():
        for s in slots:
            if s:
                decoder.output_hypernetworks_mlps[s].load_state_dict(decoder.output_hypernetworks_mlps[0].state_dict())


def decode(net, decoder, embedding, boxes_model):
    """Decode boxes of ONE image. ``embedding`` ``(1, 256, 64, 64)``; ``boxes_model`` ``(n, 4)`` XYXY in the
    model input frame. Returns ``(logits (n, 1, 256, 256), iou (n, 1))``. ``decoder`` is ``net.mask_decoder``
    or a wrapper of it (DDP)."""
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes_model[:, None, :], masks=None)
    return decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)


def decode_batched(net, embeddings, owner, boxes_model, decoder=None, slots: Sequence[int] = (0,)):
    """Decode prompts of MANY images in one pass. ``embeddings`` ``(B, 256, 64, 64)``; ``owner`` long ``(n,)``: the
    image of each prompt; ``boxes_model`` ``(n, 4)`` XYXY in the model input frame. Returns ``(logits (n, k, 256,
    256), iou (n, k))`` for the ``k`` mask-token ``slots`` (default ``(0,)``: upstream's single-mask output, equal
    to :func:`decode` image by image, tested): the decoder's own transformer, upscaling, hypernetwork MLPs and IoU
    head, fed each prompt's own embedding instead of one embedding repeated. ``decoder``: the mask decoder (default
    ``net.mask_decoder``, or its training wrapper's module); the prompt encoder is always the network's (frozen)."""
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes_model[:, None, :], masks=None)
    return decode_heads(net.mask_decoder if decoder is None else decoder, embeddings.index_select(0, owner),
                        net.prompt_encoder.get_dense_pe(), sparse, dense, slots)


def decode_heads(dec, embeddings, image_pe, sparse, dense, slots: Sequence[int] = (0,)):
    """Upstream ``MaskDecoder.predict_masks`` with one embedding per prompt and only the asked token ``slots``'
    heads: ``embeddings`` ``(n, 256, 64, 64)``, ``image_pe`` ``(1, 256, 64, 64)``, the prompt encoder's ``sparse``
    ``(n, t, 256)`` and ``dense`` ``(n, 256, 64, 64)`` -> ``(logits (n, k, 256, 256), iou (n, k))``. The
    transformer always runs every mask token (as upstream); each slot adds its MLP and one einsum."""
    import torch

    n = sparse.shape[0]
    heads = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([heads.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    src = embeddings + dense
    pos = image_pe.expand(n, -1, -1, -1)
    hs, src = dec.transformer(src, pos, tokens)
    up = dec.output_upscaling(src.transpose(1, 2).reshape(n, *embeddings.shape[1:]))
    # mask token s is hs[:, 1 + s]; slot 0 with MLP 0 is upstream's single-mask output (multimask_output=False)
    weights = torch.stack([dec.output_hypernetworks_mlps[s](hs[:, 1 + s, :]) for s in slots], dim=1)
    logits = torch.einsum("nkc,nchw->nkhw", weights, up)
    iou = dec.iou_prediction_head(hs[:, 0, :])[:, list(slots)]
    return logits, iou


def prompt_decoder_module(net, slots: Sequence[int] = (0,)):
    """:func:`decode_batched` with one embedding per prompt, ``(embeddings (n, 256, 64, 64), boxes (n, 4))`` ->
    ``(logits (n, k, 256, 256), iou (n, k))`` for the token ``slots``, as a ``torch.nn.Module`` OpenVINO can
    convert: one inference emits every slot's head."""
    import torch

    class PromptDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, embeddings, boxes_model):
            return decode_batched(self.net, embeddings, torch.arange(embeddings.shape[0]), boxes_model, slots=slots)

    return PromptDecoder()


def heads_decoder(decoder, slots: Sequence[int]):
    """Training view of the mask decoder (``net.mask_decoder``): a ``torch.nn.Module`` whose ``forward(embeddings,
    image_pe, sparse, dense)`` is :func:`decode_heads` for the token ``slots``, so DDP can wrap it (its parameters
    are the decoder's)."""
    import torch

    class HeadsDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dec, self.slots = decoder, tuple(slots)

        def forward(self, embeddings, image_pe, sparse, dense):
            return decode_heads(self.dec, embeddings, image_pe, sparse, dense, self.slots)

    return HeadsDecoder()


class Segmenter:
    """A loaded model of one family (optionally with a fine-tuned decoder) plus its embedding cache."""

    def __init__(self, family: Family, net, base_checkpoint: Path, base_sha256: str, device,
                 meta: dict | None = None, decoder_sha256: str | None = None, cache_dir=None, cache_size=256,
                 encode_batch: int | None = None, backend: str = "auto", precision: str = "auto",
                 cache_max_mb: float | None = None, decode_batch: int | None = None,
                 slots: dict | None = None, fill_holes: bool = True, close_px: int = CLOSE_PX):
        from .backends import make_encoder

        self.fam = family
        self.family = family.name
        self.net = net.to(device).eval()
        self.device = device
        self.base_checkpoint = Path(base_checkpoint)
        self.base_sha256 = base_sha256
        self.meta = dict(meta or {})
        if backend == "auto" and family.name != "litemedsam":
            backend = "torch"  # OpenVINO parity is measured for LiteMedSAM; ViT-B families ask for it by name
        self.encoder = make_encoder(net.image_encoder, device, family.input_size,
                                    f"{family.name}-{base_sha256[:16]}-{family.input_size}", backend, precision)
        # bf16 embeddings differ from f32 ones in the last digits: the cache keeps them apart
        self.encoder_id = f"{family.name}:{base_sha256}:{family.preprocess_id}" + (
            "" if self.encoder.name.endswith("f32") else f":{self.encoder.name}")
        self.model_id = f"{family.name}-{base_sha256[:12]}" + (f"-dec{decoder_sha256[:12]}" if decoder_sha256 else "")
        self.cache = EmbeddingCache(self.encoder_id, cache_size, cache_dir, cache_max_mb)
        self.encode_batch = encode_batch or (8 if device.type == "cuda" else 1)
        self.decode_batch = max(1, int(decode_batch or DECODE_BATCH.get(device.type, 4)))
        # region -> its mask-token slot in the one decoder; the first is the default region (a single-region model:
        # its one region, on slot 0)
        self.slots = {str(r).upper(): int(k) for r, k in (slots or {self.meta.get("region") or "WT": 0}).items()}
        self.regions = tuple(self.slots)
        # a solid region's masks get their 2D holes filled (regions.SOLID_REGIONS; README "Hole filling")
        self.fill_holes = bool(fill_holes)
        # ... after closing their notches narrower than a disk of close_px (README "Closing notches"; 0: off)
        self.close_px = int(close_px)
        if self.close_px < 0:
            raise UserError(f"close_px must be >= 0 (0: no closing), got {close_px}")
        self.decoder_backend = backend  # the mask decoder: OpenVINO on a CPU where it loads (made on first use)
        zero = [str(self.slots[r]) for r in self.regions if r != "WT" and r not in self.meta.get(
            "region_heads_trained", ())]  # heads set up at load (zero-shot): their weights are not in the file
        self._decoder_key = f"{family.name}-{base_sha256[:16]}-dec-{(decoder_sha256 or 'base')[:16]}" + (
            "" if tuple(self.slots.values()) == (0,) else "-slots" + "".join(map(str, self.slots.values()))) + (
            f"-zs1{''.join(zero)}" if zero else "")  # zs1: the MLP-0 copies (the key of the converted models)
        self._ov_decoder = None  # made on first use: None not yet, False unavailable

    def _region(self, region: str | None) -> str:
        """``region`` (None: the default region) checked. :class:`UserError` for a region not served."""
        region = self.regions[0] if region is None else str(region).upper()
        if region not in self.slots:
            raise UserError(f"this segmenter serves {', '.join(self.regions)}, not {region!r}")
        return region

    def region(self, region: str) -> "RegionSegmenter":
        """A view that segments with ``region``'s head (``segment`` / ``segment_many``, as the volume code needs)."""
        return RegionSegmenter(self, self._region(region))

    def prepare_decoders(self) -> None:
        """Make the OpenVINO decoder now (converted once per weights, then read from disk) instead of on the first
        prompt."""
        self._openvino_decoder()

    def _openvino_decoder(self):
        """The OpenVINO mask decoder (every region's head from one inference, in :attr:`regions` order) while it
        matches the PyTorch weights, else None (PyTorch decodes)."""
        if self.decoder_backend == "torch" or self.device.type != "cpu":
            return None
        if self._ov_decoder is None:
            from .backends import make_decoder

            dec = self.net.mask_decoder
            self._ov_decoder = make_decoder(prompt_decoder_module(self.net, tuple(self.slots.values())),
                                            dec.parameters(), self.device, self._decoder_key,
                                            self.decoder_backend) or False
        ov = self._ov_decoder
        return ov if ov and ov.current() else None

    # -- embeddings ---------------------------------------------------------------------------
    def embed(self, images: Sequence[np.ndarray], progress: bool = False):
        """Embeddings of uint8 ``(H, W, 3)`` slices: float32 cpu tensor ``(B, 256, 64, 64)``, cached by
        slice content + encoder weights + preprocessing."""
        import torch
        from tqdm import tqdm

        keys = [image_key(im) for im in images]
        out: dict[str, torch.Tensor] = {}
        todo: list[int] = []
        queued: set[str] = set()
        for i, k in enumerate(keys):
            if k in out or k in queued:
                continue
            emb = self.cache.get(k)
            if emb is None:
                todo.append(i)
                queued.add(k)
            else:
                out[k] = emb
        bar = tqdm(total=len(todo), desc=f"encode ({self.family})", unit="slice", disable=not progress or not todo,
                   leave=False)
        for start in range(0, len(todo), self.encode_batch):
            idx = todo[start:start + self.encode_batch]
            x = torch.stack([torch.from_numpy(self.fam.preprocess(images[i])[0]) for i in idx])
            emb = self.encoder(x)
            for j, i in enumerate(idx):
                e = emb[j].clone()  # a normal tensor (usable in training), not an inference tensor
                self.cache.put(keys[i], e)
                out[keys[i]] = e
            bar.update(len(idx))
        bar.close()
        if not keys:
            return torch.zeros((0, 256, 64, 64))
        return torch.stack([out[k] for k in keys])

    # -- inference ----------------------------------------------------------------------------
    def segment(self, image: np.ndarray, boxes_xyxy: np.ndarray, region: str | None = None) -> SegResult:
        """One slice uint8 ``(H, W, 3)`` + boxes ``(n, 4)`` pixel XYXY (inclusive) -> :class:`SegResult`."""
        return self.segment_many([image], [boxes_xyxy], region=region)[0]

    def segment_many(self, images: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray],
                     progress: bool = False, region: str | None = None) -> list[SegResult]:
        """Many slices, several pixel-XYXY boxes each, decoded by ``region``'s head (None: the default region).
        Embeddings are computed only for slices with boxes (and shared by every region)."""
        region = self._region(region)
        return self.segment_regions(images, boxes_per_image, (region,), progress=progress)[region]

    def segment_regions(self, images: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray],
                        regions: Sequence[str] | None = None, progress: bool = False) -> dict[str, list[SegResult]]:
        """Every one of ``regions`` (None: all served) for the same pixel-XYXY boxes, from ONE decoder pass per
        prompt: ``{region: [SegResult per image]}``, each region's result equal to ``segment_many(...,
        region=region)`` (tested)."""
        import torch

        from ..boxes import clip_xyxy
        from .families import _check_image

        regions = tuple(dict.fromkeys(self._region(r) for r in (regions or self.regions)))
        if len(images) != len(boxes_per_image):
            raise UserError(f"got {len(images)} images but {len(boxes_per_image)} box lists: expected one per image")
        images = [_check_image(im) for im in images]
        boxes = [clip_xyxy(np.asarray(b, np.float32).reshape(-1, 4), *im.shape[:2]) for im, b in
                 zip(images, boxes_per_image)]
        need = [i for i, b in enumerate(boxes) if len(b)]
        embs = self.embed([images[i] for i in need], progress=progress) if need else None
        empty = lambda im: SegResult(np.zeros((0, *im.shape[:2]), bool), np.zeros((0,), np.float32))  # noqa: E731
        results = {r: [empty(im) for im in images] for r in regions}
        frames = {i: self.fam.frame(*images[i].shape[:2]) for i in need}
        prompts = [(j, i, box) for j, i in enumerate(need) for box in boxes[i]]  # (embedding row, image, box)
        logits_of: dict[int, list] = {i: [] for i in need}
        iou_of: dict[int, list] = {i: [] for i in need}
        ov = self._openvino_decoder() if prompts else None
        # the heads asked for, as columns of the decoder's output: the OpenVINO model emits every served slot
        cols = [self.regions.index(r) for r in regions] if ov is not None else list(range(len(regions)))
        slots = [self.slots[r] for r in regions]
        with torch.inference_mode():
            for start in range(0, len(prompts), self.decode_batch):
                part = prompts[start:start + self.decode_batch]
                bm = torch.from_numpy(np.stack([self.fam.boxes_to_model(box[None], frames[i])[0]
                                                for _, i, box in part])).to(self.device)
                if ov is not None:
                    logits, iou = ov(embs[[j for j, _, _ in part]], bm)
                else:
                    rows = sorted({j for j, _, _ in part})  # only this pass's slices go to the device
                    owner = torch.tensor([rows.index(j) for j, _, _ in part], device=self.device)
                    logits, iou = decode_batched(self.net, embs[rows].to(self.device), owner, bm, slots=slots)
                for (_, i, _), lg, io in zip(part, logits, iou):
                    logits_of[i].append(lg[cols])
                    iou_of[i].append(io[cols])
            for i in need:
                logits, iou = torch.stack(logits_of[i]).float(), torch.stack(iou_of[i]).float().cpu().numpy()
                for c, r in enumerate(regions):  # (n, 1, 256, 256) per region: the family's post-processing
                    masks = self.fam.masks(logits[:, c:c + 1], frames[i])
                    if self.fill_holes and r in SOLID_REGIONS:
                        masks = fill_holes(close_notches(masks, self.close_px))
                    results[r][i] = SegResult(masks, iou[:, c])
        return results


class RegionSegmenter:
    """One region's head of a :class:`Segmenter`, with the ``segment`` / ``segment_many`` of
    :class:`~bratsmedsam.protocols.SliceSegmenter` (the embedding cache is the segmenter's)."""

    def __init__(self, seg: Segmenter, region: str):
        self.seg, self.region_name = seg, region
        self.meta = seg.meta  # the decoder's training record (``pipeline.propagation_margin`` reads it)

    def segment(self, image, boxes_xyxy):
        return self.seg.segment(image, boxes_xyxy, region=self.region_name)

    def segment_many(self, images, boxes_per_image, progress: bool = False):
        return self.seg.segment_many(images, boxes_per_image, progress=progress, region=self.region_name)


def load_segmenter(base: str | None = "litemedsam", checkpoint=None, decoder=None, device=None, cache_dir=None,
                   cache_size: int = 256, backend: str = "auto", precision: str = "auto",
                   cache_max_mb: float | None = None, decode_batch: int | None = None,
                   regions: Sequence[str] | None = None, fill_holes: bool = True,
                   close_px: int = CLOSE_PX) -> Segmenter:
    """Load a family (``litemedsam`` default, ``medsam``, ``sam``), optionally with a fine-tuned ``decoder``
    checkpoint from :func:`train_decoder`. With a decoder, its metadata names the base family and the SHA-256 of
    the base checkpoint; the base checkpoint must match it (``checkpoint`` or the path recorded at training).
    ``backend``/``precision`` choose how the image encoder runs (:mod:`.backends`).

    ``regions`` (e.g. ``("WT", "TC", "ET")``): one head (mask-token slot) of the one decoder per region, WT first.
    A region the checkpoint was trained for keeps its slot (meta ``region_slots``); any other region gets its
    zero-shot head (:data:`ZERO_SHOT_SLOTS`). None: the checkpoint's regions (one region for a single-region
    checkpoint or none at all). A checkpoint of the old format (one decoder copy per region, ``region_decoders``)
    is a :class:`UserError`: its copies cannot share one pass. ``fill_holes``: fill the 2D holes of a solid region's
    masks (:data:`~bratsmedsam.regions.SOLID_REGIONS`, on by default; off reproduces the raw decoder output), after
    closing their notches narrower than a disk of ``close_px`` px (:func:`close_notches`; 0: holes only)."""
    dec = load_decoder(decoder) if decoder is not None else None
    meta = dict(dec["meta"]) if dec else {}
    if dec:
        dbase = meta.get("base")
        if base not in (None, "litemedsam", dbase):  # the default base gives way to the decoder's own
            raise UserError(f"decoder {decoder} was fine-tuned on base {dbase!r}, not {base!r}")
        base = dbase
        if checkpoint is None and dbase != "litemedsam":
            checkpoint = meta.get("base_checkpoint")
    base = base or "litemedsam"
    if base not in FAMILIES:
        raise UserError(f"unknown segmenter base {base!r}: expected one of {', '.join(FAMILIES)}")
    if dec and "region_decoders" in dec:
        raise UserError(f"decoder {decoder} holds one decoder copy per region ({', '.join(dec['region_decoders'])}: "
                        "the format before the regions shared one decoder); this version serves every region from "
                        "one decoder's heads: train it again with train-segmenter --regions BraTS (or publish a "
                        "new training), or use the previous version to serve it")
    net, path, sha = load_base(base, checkpoint)
    dsha = None
    if dec:
        if meta.get("base_checkpoint_sha256") != sha:
            raise UserError(f"decoder {decoder} was fine-tuned on a {base} checkpoint with SHA-256 "
                            f"{meta.get('base_checkpoint_sha256')}, but {path} has {sha}")
        try:
            net.mask_decoder.load_state_dict(dec["decoder"], strict=True)
        except RuntimeError:
            raise UserError(f"decoder {decoder} does not fit the {base} mask decoder") from None
        dsha = file_sha256(decoder)
    fam = get_family(base)
    slots = None
    wanted = [str(r).upper() for r in (regions or meta.get("regions") or [])]
    if wanted:
        trained = {str(r).upper(): int(k) for r, k in (meta.get("region_slots") or
                                                      ({meta.get("region") or "WT": 0} if dec else {})).items()}
        for r in wanted:
            if r not in ZERO_SHOT_SLOTS:
                raise UserError(f"unknown region {r!r} for a decoder head: expected one of "
                                f"{', '.join(ZERO_SHOT_SLOTS)}")
        if wanted != ["WT"] and (wanted[0] != "WT" or (trained and "WT" not in trained)):
            raise UserError(f"regions {', '.join(wanted)} share one decoder whose slot 0 is WT (WT first); "
                            + (f"decoder {decoder} was trained for {', '.join(trained)} alone: train it with "
                               "--regions BraTS" if trained and "WT" not in trained else "ask for WT first"))
        slots = {r: trained.get(r, ZERO_SHOT_SLOTS[r]) for r in wanted}
        if len(set(slots.values())) != len(slots):
            raise UserError(f"decoder {decoder}: regions {slots} would share a mask token")
        zero = [r for r in wanted if r not in trained]
        zero_shot_heads(net.mask_decoder, [slots[r] for r in zero if r != "WT"])
        meta = {**meta, "regions": list(slots), "region_slots": slots,
                "region_heads_trained": [r for r in wanted if r in trained]}
    if meta.get("preprocess") not in (None, fam.preprocess_id):
        raise UserError(f"decoder {decoder} was trained with preprocessing {meta['preprocess']!r}, "
                        f"this code has {fam.preprocess_id!r}")
    return Segmenter(fam, net, path, sha, pick_device(device), meta=meta, decoder_sha256=dsha, cache_dir=cache_dir,
                     cache_size=cache_size, backend=backend, precision=precision, cache_max_mb=cache_max_mb,
                     decode_batch=decode_batch, slots=slots, fill_holes=fill_holes, close_px=close_px)


__all__ = ["SegResult", "Segmenter", "load_segmenter", "decode", "decode_batched", "decode_heads", "heads_decoder",
           "fill_holes", "close_notches", "CLOSE_PX", "union_masks", "ZERO_SHOT_SLOTS"]
