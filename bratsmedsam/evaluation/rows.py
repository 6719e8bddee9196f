"""What is evaluated: Table 2's segmenter rows and the detectors, found from run folders or files, and loaded.

A row whose weights were not supplied stays in the tables as "not supplied" (:attr:`SegmenterRow.missing`),
never as a number.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

NOT_SUPPLIED = "not supplied"


@dataclass
class SegmenterRow:
    """One row of Table 2: a zero-shot family or a fine-tuned decoder, and whether it can run."""

    name: str
    base: str
    kind: str                        # "zero-shot" | "fine-tuned"
    checkpoint: Path | None = None   # base weights (None: packaged LiteMedSAM or the decoder's recorded base)
    decoder: Path | None = None
    missing: str | None = None       # why it shows "not supplied"

    @property
    def supplied(self) -> bool:
        return self.missing is None


FAMILY_NAMES = {"sam": "SAM ViT-B", "medsam": "MedSAM ViT-B", "litemedsam": "LiteMedSAM"}


def resolve_detector(path: str | Path) -> Path:
    """A detector run folder (``weights/best.pt`` inside) or a ``.pt`` file -> the weights file."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "weights" / "best.pt", p / "best.pt"):
            if cand.is_file():
                return cand
        raise UserError(f"detector run {p} has no weights/best.pt (expected a train-detector run folder or a .pt)")
    if not p.is_file():
        raise UserError(f"detector weights {p} not found (expected a train-detector run folder or a .pt file)")
    return p


def resolve_decoder(path: str | Path) -> Path:
    """A train-segmenter run folder (``best.pt`` inside) or a decoder checkpoint file -> the checkpoint."""
    p = Path(path)
    if p.is_dir():
        found = [p / "best.pt"] if (p / "best.pt").is_file() else sorted(p.glob("**/best.pt"))
        if not found:
            raise UserError(f"segmenter run {p} has no best.pt (expected a train-segmenter run folder or checkpoint)")
        return found[0]
    if not p.is_file():
        raise UserError(f"segmenter checkpoint {p} not found (expected a train-segmenter run folder or best.pt)")
    return p


def segmenter_rows(cfg) -> list[SegmenterRow]:
    """Table 2's rows from an ``EvaluateConfig``: zero-shot SAM / MedSAM / LiteMedSAM, then every fine-tuned
    decoder given."""
    from ..segmenter.checkpoint import load_decoder

    given = {"sam": cfg.sam_checkpoint, "medsam": cfg.medsam_checkpoint}
    flag = {"sam": "--sam-checkpoint", "medsam": "--medsam-checkpoint"}
    rows = []
    for fam in cfg.zero_shot:
        ckpt = given.get(fam)
        missing = None
        if fam in given and ckpt is None:
            missing = f"{NOT_SUPPLIED} ({flag[fam]})"
        elif ckpt is not None and not Path(ckpt).is_file():
            raise UserError(f"{flag[fam]} {ckpt} does not exist")
        rows.append(SegmenterRow(f"{FAMILY_NAMES[fam]} zero-shot", fam, "zero-shot", ckpt, None, missing))
    for i, path in enumerate(cfg.segmenters):
        dec = resolve_decoder(path)
        meta = load_decoder(dec)["meta"]
        base = meta.get("base", "litemedsam")
        label = Path(path).name if Path(path).is_dir() else Path(path).parent.name or Path(path).stem
        ckpt = given.get(base)
        missing = None
        recorded = meta.get("base_checkpoint")
        if base in given and ckpt is None and not (recorded and Path(recorded).is_file()):
            missing = f"{NOT_SUPPLIED} (base {FAMILY_NAMES.get(base, base)} weights: {flag[base]})"
        rows.append(SegmenterRow(f"{FAMILY_NAMES.get(base, base)} fine-tuned ({label})", base, "fine-tuned",
                                 ckpt, dec, missing))
    names = [r.name for r in rows]
    seen: dict[str, int] = defaultdict(int)
    for r, name in zip(rows, names):   # two runs with the same folder name: number them
        if names.count(name) > 1:
            seen[name] += 1
            r.name = f"{name} #{seen[name]}"
    return rows


def load_segmenters(rows: list[SegmenterRow], cfg, regions=None) -> dict:
    """Load every supplied row; rows sharing an encoder share one embedding cache (the encoder is frozen).
    ``regions``: one head per region of the one decoder (a zero-shot row: the zero-shot heads; a fine-tuned row:
    its checkpoint's heads, the zero-shot head for a region it lacks)."""
    from ..segmenter import load_segmenter

    loaded, caches = {}, {}
    for r in rows:
        if not r.supplied:
            continue
        seg = load_segmenter(base=r.base, checkpoint=r.checkpoint, decoder=r.decoder, device=cfg.device,
                             cache_dir=cfg.cache_dir, cache_size=320, regions=regions,
                             fill_holes=cfg.fill_holes, close_px=cfg.close_px)
        if seg.encoder_id in caches:
            seg.cache = caches[seg.encoder_id]
        caches.setdefault(seg.encoder_id, seg.cache)
        loaded[r.name] = seg
    return loaded


def detector_name(weights: Path, taken: set[str]) -> str:
    """A unique short name for a detector: its run folder's name (primed when taken)."""
    run = weights.parent.parent if weights.parent.name == "weights" else weights.parent
    name = run.name or weights.stem
    while name in taken:
        name += "'"
    taken.add(name)
    return name


def load_detectors(weights: list[Path], names: list[str], cfg) -> dict:
    """``{name: Detector}`` at the configured operating confidence (``det_conf``)."""
    if not weights:
        return {}
    from ..detector import Detector

    conf = None if cfg.det_conf == "stored" else cfg.det_conf
    return {n: Detector(w, device=cfg.device, conf=conf) for w, n in zip(weights, names)}
