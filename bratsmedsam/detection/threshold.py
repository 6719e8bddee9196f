"""The detector's operating confidence, chosen on the validation split after training.

:func:`select_threshold` evaluates the best weights on the validation split, takes the max-F1
confidence (boxes: inclusive pixel XYXY, IoU 0.5 matching) and stores it in the checkpoint
(:mod:`.weights`); ``Detector(weights)`` with ``conf=None`` operates there.
"""

from __future__ import annotations

from pathlib import Path

from .evaluation import evaluate_detector
from .weights import store_threshold


def select_threshold(weights, data_yaml, split: str = "val", device=None) -> dict:
    """Max-F1 confidence of ``weights`` on ``split``; stored in the weights and returned with its P/R/F1.

    When the split yields no boxes or no targets the entry's ``conf`` is None (the default 0.25 applies).
    """
    res = evaluate_detector(weights, data_yaml, split=split, conf=None, device=device)
    chosen = res["table"]["best_f1_conf"]
    raw = res["operating"]["raw"]
    entry = {"conf": None if chosen is None else round(float(chosen), 4), "split": split,
             "rule": "max F1 at IoU 0.5", "precision": raw["precision"], "recall": raw["recall"],
             "f1": raw["f1"], "n_slices": res["n_slices"], "map50": res["map50"]}
    store_threshold(Path(weights), entry)
    return entry
