"""The accuracy checks the report states under its tables, computed from those tables.

Three checks, on each region evaluated:

- **lesion-wise**: with ground-truth boxes, after the 3D clean-up (what the app serves), the lesion-wise Dice is at
  least the volume Dice minus :data:`LESION_SLACK` (a gap means false-positive or split components);
- **end to end**: the detector's automatic segmentation (volume-aware when it was scored, else the per-slice chain
  after the clean-up) reaches the ground-truth-box volume Dice minus :data:`END_TO_END_SLACK`;
- **fine-tuned >= zero-shot**: every fine-tuned row against the zero-shot row of its own base family on every cell
  both have (slice Dice per box source, and each 3D metric per 3D source, the raw ones included); a Dice must be
  at least as high and an HD95 at most as high. ``served`` marks the cells of what the app returns (slice Dice, 3D
  after the clean-up, volume-aware); the raw 3D rows are the clean-up's "before". Each cell also counts the test
  cases on which the fine-tuned row is at least as good (``cases_met`` of ``n_cases``, the others by id in
  ``cases_not_met``), from the results' per-case rows: a mean lost to one case reads differently from one lost on
  every case.

Values are compared at the precision the report prints (Dice 3 decimals, HD95 0.1 mm), so a cell that reads
equal counts as met. A cell that is not a finite number on either side (not supplied, nothing scored) is not
counted. With one or a few test cases these are statements about those cases, not about data in general.
"""

from __future__ import annotations

import math

from .records import CLEANED, GT, PROPAGATED

LESION_SLACK = 0.05
END_TO_END_SLACK = 0.10
#: 3D metric -> (label, decimals shown, higher is better)
VOLUME_METRICS = {"volume_dice": ("volume Dice", 3, True), "volume_hd95": ("volume HD95 (mm)", 1, False),
                  "lesion_dice": ("lesion-wise Dice", 3, True), "lesion_hd95": ("lesion-wise HD95 (mm)", 1, False)}
SLICE_METRICS = {"tumour": "slice Dice, tumour slices", "all": "slice Dice, all slices"}
#: slice-table part -> its per-case column (``records.per_case_rows``)
SLICE_CASE_KEYS = {"tumour": "slice_dice_tumour", "all": "slice_dice_all"}


def _shown(x, digits: int) -> float | None:
    """``x`` as the report prints it, or None when it is not a finite number."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), digits)


def _no_worse(value: float, reference: float, higher: bool) -> bool:
    """A cell's value is at least as good as its reference: as high for a Dice, as low for an HD95."""
    return value >= reference if higher else value <= reference


def _mean(cell: dict | None, digits: int) -> float | None:
    return _shown((cell or {}).get("mean"), digits)


def _gt_source(sources: list[str]) -> str:
    return GT + CLEANED if GT + CLEANED in sources else GT


def _automatic_source(detector: str, sources: list[str]) -> str | None:
    for src in (detector + PROPAGATED, detector + CLEANED, detector):
        if src in sources:
            return src
    return None


def _n_patients(cell: dict | None) -> int:
    return int((cell or {}).get("n_patients") or 0)


def lesion_checks(results: dict) -> list[dict]:
    sources = results.get("volume_sources") or [GT]
    src = _gt_source(sources)
    out = []
    for e in results.get("volume") or []:
        if e.get("missing") or src not in e["cells"]:
            continue
        c = e["cells"][src]
        lesion, vol = _mean(c["lesion_dice"], 3), _mean(c["volume_dice"], 3)
        if lesion is None or vol is None:
            continue
        bar = round(vol - LESION_SLACK, 3)
        out.append({"check": "lesion-wise", "segmenter": e["segmenter"], "region": e.get("region", "WT"),
                    "source": src, "value": lesion, "reference": vol, "bar": bar, "met": lesion >= bar,
                    "n_patients": _n_patients(c["volume_dice"])})
    return out


def end_to_end_checks(results: dict) -> list[dict]:
    sources = results.get("volume_sources") or [GT, *results.get("detectors", [])]
    gt = _gt_source(sources)
    out = []
    for e in results.get("volume") or []:
        if e.get("missing") or gt not in e["cells"]:
            continue
        ref = _mean(e["cells"][gt]["volume_dice"], 3)
        for det in results.get("detectors", []):
            src = _automatic_source(det, sources)
            if src is None or src not in e["cells"] or ref is None:
                continue
            value = _mean(e["cells"][src]["volume_dice"], 3)
            if value is None:
                continue
            bar = round(ref - END_TO_END_SLACK, 3)
            out.append({"check": "end to end", "segmenter": e["segmenter"], "region": e.get("region", "WT"),
                        "detector": det, "source": src, "value": value, "reference": ref, "bar": bar,
                        "met": value >= bar, "n_patients": _n_patients(e["cells"][src]["volume_dice"])})
    return out


def _pairs(results: dict) -> list[tuple[str, str, str]]:
    """(fine-tuned row, its zero-shot row, region) for every supplied fine-tuned row whose base family's zero-shot
    row was scored."""
    entries = [e for e in results.get("table2") or [] if not e.get("missing")]
    key = lambda e: (e.get("base"), e.get("region", "WT"))  # noqa: E731
    zero = {key(e): e["segmenter"] for e in entries if e.get("kind") == "zero-shot"}
    return [(e["segmenter"], zero[key(e)], key(e)[1]) for e in entries
            if e.get("kind") == "fine-tuned" and key(e) in zero]


def _case_values(results: dict) -> dict:
    """``(segmenter, box source, region, per-case column) -> {case: value}`` of the results' per-case rows."""
    out: dict = {}
    for r in results.get("per_case") or []:
        for key in (*SLICE_CASE_KEYS.values(), *VOLUME_METRICS):
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault((r["segmenter"], r["boxes"], r.get("region", "WT"), key), {})[r["case"]] = float(v)
    return out


def _per_case(values: dict, ft: str, zs: str, src: str, region: str, key: str, digits: int,
              higher: bool) -> tuple[int, int, list[str]]:
    """``(cases where ft is at least as good as zs, cases both have, the others' ids)`` at the shown precision."""
    a, b = values.get((ft, src, region, key), {}), values.get((zs, src, region, key), {})
    lost = []
    both = sorted(a.keys() & b.keys())
    for case in both:
        if not _no_worse(_shown(a[case], digits), _shown(b[case], digits), higher):
            lost.append(case)
    return len(both) - len(lost), len(both), lost


def fine_tuned_checks(results: dict) -> list[dict]:
    out = []
    values = _case_values(results)
    slice_rows = {(e["segmenter"], e.get("region", "WT")): e for e in results.get("table2") or []}
    volume_rows = {(e["segmenter"], e.get("region", "WT")): e for e in results.get("volume") or []
                   if not e.get("missing")}
    for ft, zs, region in _pairs(results):
        cells = []
        a, b = slice_rows[(ft, region)]["cells"], slice_rows[(zs, region)]["cells"]
        for src in a.keys() & b.keys():
            for part, label in SLICE_METRICS.items():
                cells.append((label, src, _mean(a[src][part], 3), _mean(b[src][part], 3), True, a[src][part],
                              _per_case(values, ft, zs, src, region, SLICE_CASE_KEYS[part], 3, True)))
        if (ft, region) in volume_rows and (zs, region) in volume_rows:
            a, b = volume_rows[(ft, region)]["cells"], volume_rows[(zs, region)]["cells"]
            for src in a.keys() & b.keys():
                for metric, (label, digits, higher) in VOLUME_METRICS.items():
                    cells.append((label, src, _mean(a[src][metric], digits), _mean(b[src][metric], digits),
                                  higher, a[src][metric], _per_case(values, ft, zs, src, region, metric, digits,
                                                                    higher)))
        for label, src, value, ref, higher, cell, (won, n, lost) in sorted(cells, key=lambda c: (c[1], c[0])):
            if value is None or ref is None:
                continue
            # a raw 3D row (before the clean-up) is not what the app serves; slice Dice and cleaned rows are
            served = label in SLICE_METRICS.values() or src.endswith((CLEANED, PROPAGATED))
            out.append({"check": "fine-tuned >= zero-shot", "segmenter": ft, "reference_row": zs, "region": region,
                        "metric": label, "source": src, "value": value, "reference": ref,
                        "higher_is_better": higher, "met": _no_worse(value, ref, higher), "served": served,
                        "n_patients": _n_patients(cell), "cases_met": won, "n_cases": n, "cases_not_met": lost})
    return out


def accuracy_checks(results: dict) -> list[dict]:
    """Every check of this module on an ``evaluate`` results dict, one dict per compared cell."""
    return lesion_checks(results) + end_to_end_checks(results) + fine_tuned_checks(results)
