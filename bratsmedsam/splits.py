"""The patient-level split of ``prepare``: seeded, stable when cases are added, every split non-empty
when there are enough cases (:data:`SPLIT_RULE` is what ``prepare.json`` records)."""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Sequence

from .dataset import SPLITS
from .errors import UserError

SPLIT_RULE = (
    "cases ranked by sha256(seed:case_id); counts = largest-remainder rounding of n * fractions, "
    "then, with >= 3 cases, every split with a non-zero fraction gets >= 1 case, taken from the largest split"
)


def parse_split(split: str | Sequence[float]) -> tuple[float, float, float]:
    """``"6:2:2"``, ``"0.6,0.2,0.2"`` or three numbers -> fractions summing to 1."""
    if isinstance(split, str):
        parts = split.replace(":", ",").split(",")
    else:
        parts = list(split)
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise UserError(f"split must be three numbers train,val,test (e.g. 6:2:2), got {split!r}") from None
    if len(vals) != 3 or any(not math.isfinite(v) or v < 0 for v in vals) or sum(vals) <= 0:
        raise UserError(f"split must be three non-negative numbers train,val,test, not all 0, got {split!r}")
    total = sum(vals)
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Cases per split: largest-remainder rounding of ``n * fractions``; with ``n >= 3`` every split
    with a non-zero fraction gets at least one case (taken from the currently largest split)."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(fractions):
        for i, f in enumerate(fractions):
            if f > 0 and counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def split_cases(case_ids: Iterable[str], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> dict[str, str]:
    """Patient-level split ``{case_id: "train"|"val"|"test"}``, seeded and stable when cases are added."""
    ids = sorted(set(case_ids), key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest())
    counts = split_counts(len(ids), fractions)
    out, start = {}, 0
    for name, count in zip(SPLITS, counts):
        for cid in ids[start:start + count]:
            out[cid] = name
        start += count
    return out
