"""The detector's operating confidence: chosen on the validation split after training, stored in the weights.

A short CPU training run leaves confidences well below ultralytics' usual 0.25, so a fixed threshold
would drop most true boxes. :func:`select_threshold` evaluates the best weights on the validation
split, takes the max-F1 confidence (boxes: inclusive pixel XYXY, IoU 0.5 matching) and writes it into
the checkpoint itself under :data:`KEY`, so it travels with the ``.pt`` when the weights are copied
or published. :func:`stored_threshold` reads it back; ``Detector(weights)`` with ``conf=None`` uses it.
"""

from __future__ import annotations

from pathlib import Path

from .. import atomic

KEY = "bratsmedsam_operating"
DEFAULT_CONF = 0.25


def stored_threshold(ckpt) -> float | None:
    """The operating confidence stored in a loaded checkpoint dict, or None when there is none."""
    entry = ckpt.get(KEY) if isinstance(ckpt, dict) else None
    conf = entry.get("conf") if isinstance(entry, dict) else None
    return float(conf) if conf is not None else None


def store_threshold(weights: Path, entry: dict) -> None:
    """Write ``entry`` (``{"conf": float | None, ...}``) into the checkpoint at ``weights``, atomically."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    ckpt[KEY] = entry
    atomic.save_torch(ckpt, weights)


def select_threshold(weights, data_yaml, split: str = "val", device=None) -> dict:
    """Max-F1 confidence of ``weights`` on ``split``; stored in the weights and returned with its P/R/F1.

    When the split yields no boxes or no targets the entry's ``conf`` is None (the default 0.25 applies).
    """
    from .evaluation import evaluate_detector

    res = evaluate_detector(weights, data_yaml, split=split, conf=None, device=device)
    chosen = res["table"]["best_f1_conf"]
    raw = res["operating"]["raw"]
    entry = {"conf": None if chosen is None else round(float(chosen), 4), "split": split,
             "rule": "max F1 at IoU 0.5", "precision": raw["precision"], "recall": raw["recall"],
             "f1": raw["f1"], "n_slices": res["n_slices"], "map50": res["map50"]}
    store_threshold(Path(weights), entry)
    return entry
