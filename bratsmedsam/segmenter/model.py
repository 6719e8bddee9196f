"""``Segmenter``: slice image(s) + pixel-XYXY boxes -> binary masks at the original resolution.

The image embedding is computed once per slice (through :class:`EmbeddingCache`). Upstream ``MaskDecoder``
repeats ONE image's embedding once per prompt, so it cannot decode boxes of different slices together;
:func:`decode_batched` runs the same decoder modules with one embedding per prompt (gathered, not repeated), so
the boxes of several slices go through the decoder together (``decode_batch`` prompts per pass).

Region decoders: a segmenter holds one mask decoder per BraTS region it serves (``decoders``: WT is the network's
own ``mask_decoder``, TC and ET are copies of it, fine-tuned apart), all prompted on the same cached embedding;
``segment_many(..., region=...)`` picks one and :meth:`Segmenter.region` gives a view bound to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..devices import pick_device
from ..errors import UserError
from .cache import EmbeddingCache, image_key
from ..digest import file_sha256
from .checkpoint import load_base, load_decoder
from .families import FAMILIES, Family, get_family


@dataclass
class SegResult:
    masks: np.ndarray  # bool (n, H, W), original resolution, one per input box
    iou: np.ndarray  # float32 (n,), the model's predicted IoU per mask


def union_masks(masks, shape) -> np.ndarray:
    """bool ``shape``: the union of a result's ``(n, H, W)`` masks (all False when there are none)."""
    m = np.asarray(masks, bool)
    return m.any(axis=0) if m.shape[0] else np.zeros(shape, bool)


#: prompts per decoder pass by device type. CPU: measured (bench_decoder.py, AMX CPU, 2 threads, quiet): 57 ms per
#: box at 4 against 72 ms one slice per call, but 106 ms at 16 (the (n, 32, 256, 256) upscaling outgrows the cache).
#: CUDA: not measured here (no GPU); 32 is an assumption, ``decode_batch=`` overrides it.
DECODE_BATCH = {"cpu": 4, "cuda": 32}


def decode(net, decoder, embedding, boxes_model):
    """Decode boxes of ONE image. ``embedding`` ``(1, 256, 64, 64)``; ``boxes_model`` ``(n, 4)`` XYXY in the
    model input frame. Returns ``(logits (n, 1, 256, 256), iou (n, 1))``. ``decoder`` is ``net.mask_decoder``
    or a wrapper of it (DDP)."""
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes_model[:, None, :], masks=None)
    return decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)


def decode_batched(net, embeddings, owner, boxes_model, decoder=None):
    """Decode prompts of MANY images in one pass. ``embeddings`` ``(B, 256, 64, 64)``; ``owner`` long ``(n,)``: the
    image of each prompt; ``boxes_model`` ``(n, 4)`` XYXY in the model input frame. Returns ``(logits (n, 1, 256,
    256), iou (n, 1))``, equal to :func:`decode` image by image (tested): the decoder's own transformer, upscaling,
    hypernetwork MLPs and IoU head, fed each prompt's own embedding instead of one embedding repeated. ``decoder``: a
    region's mask decoder (default ``net.mask_decoder``); the prompt encoder is always the network's (frozen)."""
    import torch

    dec = net.mask_decoder if decoder is None else decoder
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes_model[:, None, :], masks=None)
    n = sparse.shape[0]
    heads = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([heads.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    src = embeddings.index_select(0, owner) + dense
    pos = net.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
    hs, src = dec.transformer(src, pos, tokens)
    up = dec.output_upscaling(src.transpose(1, 2).reshape(n, *embeddings.shape[1:]))
    mask_token = hs[:, 1, :]  # the single-mask output (multimask_output=False)
    weights = dec.output_hypernetworks_mlps[0](mask_token)
    logits = torch.einsum("nc,nchw->nhw", weights, up).unsqueeze(1)
    iou = dec.iou_prediction_head(hs[:, 0, :])[:, :1]
    return logits, iou


def prompt_decoder_module(net, decoder=None):
    """:func:`decode_batched` with one embedding per prompt, ``(embeddings (n, 256, 64, 64), boxes (n, 4))``, as a
    ``torch.nn.Module`` OpenVINO can convert (``decoder``: a region's, default the network's)."""
    import torch

    class PromptDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.dec = net.mask_decoder if decoder is None else decoder

        def forward(self, embeddings, boxes_model):
            return decode_batched(self.net, embeddings, torch.arange(embeddings.shape[0]), boxes_model, self.dec)

    return PromptDecoder()


class Segmenter:
    """A loaded model of one family (optionally with a fine-tuned decoder) plus its embedding cache."""

    def __init__(self, family: Family, net, base_checkpoint: Path, base_sha256: str, device,
                 meta: dict | None = None, decoder_sha256: str | None = None, cache_dir=None, cache_size=256,
                 encode_batch: int | None = None, backend: str = "auto", precision: str = "auto",
                 cache_max_mb: float | None = None, decode_batch: int | None = None,
                 decoders: dict | None = None):
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
        # region -> mask decoder; the first is the default region (a single-region model: its one region)
        self.decoders = {r: d.to(device).eval() for r, d in (decoders or {self.meta.get("region") or "WT":
                                                                           self.net.mask_decoder}).items()}
        self.regions = tuple(self.decoders)
        self.decoder_backend = backend  # the mask decoder: OpenVINO on a CPU where it loads (made on first use)
        self._decoder_key = f"{family.name}-{base_sha256[:16]}-dec-{(decoder_sha256 or 'base')[:16]}"
        self._ov_decoders: dict = {}

    def _decoder(self, region: str | None):
        """``(region, its mask decoder)``; None: the default region. :class:`UserError` for a region not served."""
        region = self.regions[0] if region is None else str(region).upper()
        if region not in self.decoders:
            raise UserError(f"this segmenter has decoders for {', '.join(self.regions)}, not {region!r}")
        return region, self.decoders[region]

    def region(self, region: str) -> "RegionSegmenter":
        """A view that segments with ``region``'s decoder (``segment`` / ``segment_many``, as the volume code needs)."""
        return RegionSegmenter(self, self._decoder(region)[0])

    def prepare_decoders(self) -> None:
        """Make every region's OpenVINO decoder now (converted once per weights, then read from disk) instead of
        on its first prompt."""
        for region in self.regions:
            self._openvino_decoder(region)

    def _openvino_decoder(self, region: str | None = None):
        """The OpenVINO mask decoder of ``region`` (None: the default one) while it matches its PyTorch weights, else
        None (PyTorch decodes)."""
        region = self._decoder(region)[0]
        if self.decoder_backend == "torch" or self.device.type != "cpu":
            return None
        if region not in self._ov_decoders:
            from .backends import make_decoder

            dec = self.decoders[region]
            key = self._decoder_key + ("" if dec is self.net.mask_decoder else f"-{region}")
            self._ov_decoders[region] = make_decoder(prompt_decoder_module(self.net, dec), dec.parameters(),
                                                     self.device, key, self.decoder_backend) or False
        ov = self._ov_decoders[region]
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
        """Many slices, several pixel-XYXY boxes each, decoded by ``region``'s decoder (None: the default region).
        Embeddings are computed only for slices with boxes (and shared by every region)."""
        import torch

        from ..boxes import clip_xyxy
        from .families import _check_image

        region, decoder = self._decoder(region)
        if len(images) != len(boxes_per_image):
            raise UserError(f"got {len(images)} images but {len(boxes_per_image)} box lists: expected one per image")
        images = [_check_image(im) for im in images]
        boxes = [clip_xyxy(np.asarray(b, np.float32).reshape(-1, 4), *im.shape[:2]) for im, b in
                 zip(images, boxes_per_image)]
        need = [i for i, b in enumerate(boxes) if len(b)]
        embs = self.embed([images[i] for i in need], progress=progress) if need else None
        results = [SegResult(np.zeros((0, *im.shape[:2]), bool), np.zeros((0,), np.float32)) for im in images]
        frames = {i: self.fam.frame(*images[i].shape[:2]) for i in need}
        prompts = [(j, i, box) for j, i in enumerate(need) for box in boxes[i]]  # (embedding row, image, box)
        logits_of: dict[int, list] = {i: [] for i in need}
        iou_of: dict[int, list] = {i: [] for i in need}
        ov = self._openvino_decoder(region) if prompts else None
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
                    logits, iou = decode_batched(self.net, embs[rows].to(self.device), owner, bm, decoder)
                for (_, i, _), lg, io in zip(part, logits, iou):
                    logits_of[i].append(lg)
                    iou_of[i].append(io)
            for i in need:
                masks = self.fam.masks(torch.stack(logits_of[i]).float(), frames[i])
                results[i] = SegResult(masks, torch.stack(iou_of[i])[:, 0].float().cpu().numpy())
        return results


class RegionSegmenter:
    """One region's decoder of a :class:`Segmenter`, with the ``segment`` / ``segment_many`` of
    :class:`~bratsmedsam.protocols.SliceSegmenter` (the embedding cache is the segmenter's)."""

    def __init__(self, seg: Segmenter, region: str):
        self.seg, self.region_name = seg, region

    def segment(self, image, boxes_xyxy):
        return self.seg.segment(image, boxes_xyxy, region=self.region_name)

    def segment_many(self, images, boxes_per_image, progress: bool = False):
        return self.seg.segment_many(images, boxes_per_image, progress=progress, region=self.region_name)


def load_segmenter(base: str | None = "litemedsam", checkpoint=None, decoder=None, device=None, cache_dir=None,
                   cache_size: int = 256, backend: str = "auto", precision: str = "auto",
                   cache_max_mb: float | None = None, decode_batch: int | None = None,
                   regions: Sequence[str] | None = None) -> Segmenter:
    """Load a family (``litemedsam`` default, ``medsam``, ``sam``), optionally with a fine-tuned ``decoder``
    checkpoint from :func:`train_decoder`. With a decoder, its metadata names the base family and the SHA-256 of
    the base checkpoint; the base checkpoint must match it (``checkpoint`` or the path recorded at training).
    ``backend``/``precision`` choose how the image encoder runs (:mod:`.backends`).

    ``regions`` (e.g. ``("WT", "TC", "ET")``): one mask decoder per region. A region the checkpoint has a decoder for
    gets it; any other region starts from the pretrained decoder (a copy: zero-shot). None: the checkpoint's regions
    (one region for a single-region checkpoint or none at all)."""
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
    decoders = None
    trained = dict((dec or {}).get("region_decoders") or {})
    wanted = [str(r).upper() for r in (regions or meta.get("regions") or [])]
    if wanted:
        import copy

        pretrained = []  # loaded once, only when a region has no trained decoder
        # the network's own decoder serves the checkpoint's first region (zero-shot: the first region asked for)
        first = str((meta.get("regions") or [meta.get("region") or "WT"])[0]).upper() if dec else wanted[0]
        decoders = {}
        for r in wanted:
            if r not in ("WT", "TC", "ET"):
                raise UserError(f"unknown region {r!r} for a decoder: expected WT, TC or ET")
            if r == first:
                decoders[r] = net.mask_decoder
            elif r in trained:
                d = copy.deepcopy(net.mask_decoder)
                try:
                    d.load_state_dict(trained[r], strict=True)
                except RuntimeError:
                    raise UserError(f"decoder {decoder}: its {r} decoder does not fit the {base} mask decoder") from None
                decoders[r] = d
            elif not dec:  # zero-shot: a copy of the pretrained decoder
                decoders[r] = copy.deepcopy(net.mask_decoder)
            else:  # this checkpoint has no decoder for the region: it starts zero-shot
                pretrained = pretrained or [load_base(base, checkpoint)[0].mask_decoder]
                decoders[r] = copy.deepcopy(pretrained[0])
        meta = {**meta, "regions": list(decoders), "region_decoders_trained": [r for r in decoders
                                                                               if dec and (r == first or r in trained)]}
    if meta.get("preprocess") not in (None, fam.preprocess_id):
        raise UserError(f"decoder {decoder} was trained with preprocessing {meta['preprocess']!r}, "
                        f"this code has {fam.preprocess_id!r}")
    return Segmenter(fam, net, path, sha, pick_device(device), meta=meta, decoder_sha256=dsha, cache_dir=cache_dir,
                     cache_size=cache_size, backend=backend, precision=precision, cache_max_mb=cache_max_mb,
                     decode_batch=decode_batch, decoders=decoders)


__all__ = ["SegResult", "Segmenter", "load_segmenter", "decode", "decode_batched", "union_masks"]
