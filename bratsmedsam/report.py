"""The evaluation report folder: ``report.md``, ``metrics.json``, ``per_case.csv``, ``slices.csv``, ``figures/``.

Input is the results dict of :func:`bratsmedsam.evaluate.evaluate` (per-slice results as
:class:`~bratsmedsam.evaluation.records.SliceRecord`, tables built from records). Every number in the report comes
from it; a segmenter whose checkpoint was not supplied shows the words "not supplied", never a number.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json, write_text
from .evaluation.checks import END_TO_END_SLACK, LESION_SLACK, accuracy_checks
from .evaluation.records import CLEANED, DERIVED, PROPAGATED
from .volume import REFINE_MARGIN

FIGURES = {
    "examples": "figures/examples_best_median_worst.png",
    "distributions": "figures/dice_distributions.png",
    "per_case": "figures/per_case_dice.png",
}
SLICE_DEFINITION = (
    "Slice Dice: the union of the masks the segmenter returns for a slice's boxes, against the slice's "
    "target-region mask, averaged over slices. *Tumour slices*: test slices with at least one target-region "
    "pixel. *All slices*: every test slice the dataset kept (prepare keeps a sample of tumour-free slices); a "
    "tumour-free slice scores 1 if nothing is predicted and 0 otherwise, so end to end every false-positive "
    "detector box on a tumour-free slice counts as an error (with ground-truth boxes a tumour-free slice has no "
    "box and always scores 1). *GT boxes*: the manifest's boxes (one per 8-connected tumour component, "
    "inclusive pixel XYXY). *End to end*: the detector's boxes on the same slices. "
    "Brackets: 95 % percentile bootstrap interval resampling patients (a patient's slices stay together)."
)
VOLUME_DEFINITION = (
    "3D per case: each test case's axial slices are segmented and stacked into a volume of the target region. "
    "GT boxes: one box per 8-connected component of each axial slice's ground truth; end to end: the detector on "
    "every axial slice, then the segmenter on its boxes, each box's mask prompted once more with its own box + "
    f"{REFINE_MARGIN:g} px as the app's per-slice chain does (`volume.REFINE_MARGIN`; the slice table above keeps "
    "the paper's one prompt). *Volume Dice / HD95*: MONAI `compute_dice` and "
    "`compute_hausdorff_distance(percentile=95)` (max of the two directed 95th percentiles, mm) on the whole "
    "volume; HD95 is 374 mm when exactly one of prediction and ground truth is empty. *Lesion-wise Dice / HD95*: "
    "the BraTS 2023 challenge definition (GT lesions = 26-connected components grouped by a 3-iteration "
    "18-connectivity dilation; 26-connected prediction components; GT lesions of <= 50 voxels ignored; "
    "sum over GT lesions / (GT lesions + false-positive components); 374 mm HD95 for each miss or false positive), "
    "computed for the dataset's single target region. *3D clean-up*: the same prediction after removing its "
    "26-connected components smaller than the clean-up threshold (`evaluate --min-component-mm3`, "
    "`bratsmedsam.cleanup`) and, end to end, those no detection vouches for: one of confidence >= 0.5, or >= 0.3 "
    "with boxes on the component on two slices or more (the component with the most 3D evidence, the sum "
    "of its slices' best confidences, is always kept). "
    "*Volume-aware*: the detector's confident 3D candidates and the one with the most 3D evidence, then less "
    "confident candidates within 3 slices of a propagated mask or joined to one by weak boxes, and confident "
    "boxes those left unsegmented, seed a slice-by-slice propagation of the segmenter's mask (the seed box tried at "
    "x1-x2.5, the mask predicted best kept; each prompt the previous mask's box + 3 px, 1 px with a "
    "decoder fine-tuned on neighbour samples, the two mixed by a weight mix's share (2 px for a half mix), widened "
    "by the detector's boxes it overlaps unless the unwidened prompt's mask is predicted better by more than 0.06) "
    "that follows the detector's boxes, down to a third of its operating confidence (never under 0.05), and goes 3 "
    "slices past the last; a slice whose mask is under half of a mask "
    "within 3 slices on each side is prompted again from those (`pipeline.detect_and_propagate`, cleaned as "
    "above); detector boxes no propagation "
    "confirms are dropped. Brackets: bootstrap over patients."
)


REGIONS_DEFINITION = (
    "*Regions*: WT = labels {1, 2, 3}, TC = {1, 3}, ET = {3}, each scored against its own ground truth. WT rows: as "
    "above. Inner regions (TC, ET): *GT boxes* = one box per 8-connected component of that region's own ground truth, "
    "its own decoder; *GT WT boxes, inner boxes derived* = the WT decoder on the GT WT boxes, then the region's "
    "decoder prompted with the tight box of each 8-connected component of that WT mask, its mask clipped to its parent "
    "(TC to WT, ET to TC); *end to end* = the same from the detector's WT boxes. A slice without the region counts as "
    "a tumour-free slice for it (1 if nothing is predicted, else 0)."
)


def fill_text(results: dict) -> str:
    """What the masks are, as to their 2D holes (``evaluate --no-fill-holes``)."""
    if results.get("fill_holes", True):
        close = int(results.get("close_px") or 0)
        closed = (f"its notches narrower than a disk of {close} px closed and " if close else "")
        return (f"*Masks*: the decoder's, each WT / TC mask with {closed}its 2D holes filled (as the app serves them; "
                "ET, a rim, is left as drawn).")
    return "*Masks*: the decoder's raw output, holes left open (`--no-fill-holes`)."


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci_text(ci: dict, digits: int = 3) -> str:
    if ci["n_values"] == 0:
        return "n/a"
    if ci["n_patients"] < 2:
        return f"{_fmt(ci['mean'], digits)} (1 patient)"
    return f"{_fmt(ci['mean'], digits)} [{_fmt(ci['ci_low'], digits)}, {_fmt(ci['ci_high'], digits)}]"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _source_label(src: str) -> str:
    if src.endswith(PROPAGATED):
        return f"end to end ({src.removesuffix(PROPAGATED)}), volume-aware"
    base = src.removesuffix(CLEANED)
    label = ("GT boxes" if base == "gt" else "GT WT boxes, inner boxes derived" if base == DERIVED
             else f"end to end ({base})")
    return label + (", 3D clean-up" if src.endswith(CLEANED) else "")


def table1_markdown(results: dict) -> str:
    if not results["table1"]:
        return "No detector was given (`--detector`), so there is no Table 1 and no end-to-end column."
    rows = [[t["detector"], _fmt(t["precision"]), _fmt(t["recall"]), _fmt(t["map50"]), _fmt(t["map50_95"])]
            for t in results["table1"]]
    return _md_table(["detector", "precision", "recall", "mAP50", "mAP50-95"], rows)


def _multi(results: dict) -> bool:
    return len((results.get("dataset") or {}).get("regions") or []) > 1


def table2_markdown(results: dict) -> str:
    multi = _multi(results)
    sources = ["gt"] + ([DERIVED] if multi else []) + results["detectors"]
    header = ["segmenter"] + (["region"] if multi else [])
    for src in sources:
        header += [f"{_source_label(src)}: tumour slices", f"{_source_label(src)}: all slices"]
    rows = []
    for e in results["table2"]:
        lead = [e["segmenter"]] + ([e.get("region", "")] if multi else [])
        if e["missing"]:
            rows.append(lead + [e["missing"]] * (2 * len(sources)))
            continue
        cells = lead
        for src in sources:
            cells += [_ci_text(e["cells"][src]["tumour"]), _ci_text(e["cells"][src]["all"])]
        rows.append(cells)
    return _md_table(header, rows)


def volume_markdown(results: dict) -> str:
    if not results["volume"]:
        return "3D metrics were not computed (`--no-volumes`, or no segmenter could run)."
    sources = results.get("volume_sources") or ["gt"] + results["detectors"]
    multi = _multi(results)
    header = ["segmenter"] + (["region"] if multi else []) + [
        "boxes", "volume Dice", "volume HD95 (mm)", "lesion-wise Dice (BraTS 2023)", "lesion-wise HD95 (mm, BraTS 2023)"]
    rows = []
    for e in results["volume"]:
        lead = [e["segmenter"]] + ([e.get("region", "")] if multi else [])
        if e["missing"]:
            rows.append(lead + ["-"] + [e["missing"]] * 4)
            continue
        for src in sources:
            c = e["cells"][src]
            rows.append(lead + [_source_label(src), _ci_text(c["volume_dice"]),
                         _ci_text(c["volume_hd95"], 1), _ci_text(c["lesion_dice"]), _ci_text(c["lesion_hd95"], 1)])
    return _md_table(header, rows)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def checks_markdown(results: dict) -> str:
    """The accuracy checks (``evaluation.checks``) as text and tables: each check's rows, the fine-tuned ones'
    failing cells."""
    checks = results.get("checks")
    if checks is None:
        checks = accuracy_checks(results)
    multi = _multi(results)
    reg = (lambda c: [c["region"]]) if multi else (lambda c: [])
    lead = ["segmenter"] + (["region"] if multi else [])
    n = len((results.get("dataset") or {}).get("cases") or [])
    parts = [f"Computed from the tables above at the precision they show (Dice 3 decimals, HD95 0.1 mm), on {n} "
             f"test case{'s' if n != 1 else ''}" + (" (one patient: no interval)." if n == 1 else ".")]
    lesion = [c for c in checks if c["check"] == "lesion-wise"]
    if lesion:
        ok = sum(c["met"] for c in lesion)
        parts.append(f"**Lesion-wise Dice with GT boxes, after the 3D clean-up, >= volume Dice - {LESION_SLACK}**: "
                     f"met by {ok} of {len(lesion)} rows.")
        parts.append(_md_table(lead + ["lesion-wise Dice", "volume Dice", "bar", "result"],
                               [[c["segmenter"], *reg(c), _fmt(c["value"]), _fmt(c["reference"]), _fmt(c["bar"]),
                                 _met(c["met"])] for c in lesion]))
    e2e = [c for c in checks if c["check"] == "end to end"]
    if e2e:
        ok = sum(c["met"] for c in e2e)
        parts.append(f"**End to end volume Dice within {END_TO_END_SLACK:.2f} of the GT-box volume Dice** "
                     f"(volume-aware where scored, after the clean-up): met by {ok} of {len(e2e)} rows.")
        parts.append(_md_table(lead + ["detector", "end to end", "GT boxes", "bar", "result"],
                               [[c["segmenter"], *reg(c), c["detector"], _fmt(c["value"]), _fmt(c["reference"]),
                                 _fmt(c["bar"]), _met(c["met"])] for c in e2e]))
    ft = [c for c in checks if c["check"] == "fine-tuned >= zero-shot"]
    if ft:
        lines = []
        for name in dict.fromkeys(c["segmenter"] for c in ft):
            mine = [c for c in ft if c["segmenter"] == name]
            lost = [c for c in mine if not c["met"]]
            served = [c for c in mine if c.get("served", True)]
            served_lost = [c for c in served if not c["met"]]
            lines.append(f"**{name} >= {mine[0]['reference_row']}** (a Dice at least as high, an HD95 at most as "
                         f"high, every cell both rows have, raw 3D rows included): met in {len(mine) - len(lost)} of "
                         f"{len(mine)} cells; in {len(served) - len(served_lost)} of {len(served)} of what the app "
                         f"serves (slice Dice, 3D after the clean-up, volume-aware)" + ("." if not lost else
                                                                                          "; not met in:"))
            if lost:
                lines.append(_md_table((["region"] if multi else []) + ["metric", "boxes", "fine-tuned", "zero-shot",
                                                                        "cases at least as good"],
                                       [[*reg(c), c["metric"], _source_label(c["source"]),
                                         _fmt(c["value"], 1 if "HD95" in c["metric"] else 3),
                                         _fmt(c["reference"], 1 if "HD95" in c["metric"] else 3),
                                         _cases_met(c)] for c in lost]))
        parts += lines
    elif not lesion and not e2e:
        parts.append("Nothing to check (no 3D metrics and no fine-tuned row).")
    return "\n\n".join(parts)


def _cases_met(check: dict) -> str:
    """A fine-tuned check's per-case count, as the report prints it: "2 of 3 (not: case id)"."""
    if not check.get("n_cases"):
        return "-"
    lost = check.get("cases_not_met") or []
    return f"{check['cases_met']} of {check['n_cases']}" + (f" (not: {', '.join(lost)})" if lost else "")


def stacks_text(ds: dict) -> str:
    """The dataset's channel stacks as the report says them (``dataset.dataset_stacks`` of its results entry)."""
    from .dataset import dataset_stacks

    st = dataset_stacks(ds)
    return ", ".join(st.detector) if st.shared else f"detector {', '.join(st.detector)}; segmenter {', '.join(st.segmenter)}"


def report_markdown(results: dict, figures: dict[str, str | None]) -> str:
    ds = results["dataset"]
    parts = [
        "# Evaluation report",
        f"Dataset `{ds['path']}`, split **{ds['split']}**: {len(ds['cases'])} cases, {ds['n_slices']} slices; "
        + (f"regions **{', '.join(ds['regions'])}** (BraTS sub-regions; the inner ones prompted from WT, see below); "
         if len(ds.get("regions") or []) > 1 else f"target region **{ds['region']}**; ")
        + f"channels: {stacks_text(ds)}. "
        + f"Evaluation took {results['seconds']} s.",
        "## Table 1: detectors (test split)",
        "Precision, recall, mAP50 and mAP50-95 from `detector.evaluate_detector` (ultralytics validation) "
        "on the test split, as in the paper's Table 1.",
        table1_markdown(results),
        "## Table 2 (extended): slice Dice per segmenter",
        "Mean slice Dice [95 % CI]. A segmenter whose weights were not supplied shows *not supplied*.",
        table2_markdown(results),
        SLICE_DEFINITION + " " + fill_text(results) + (" " + REGIONS_DEFINITION if _multi(results) else ""),
        "## 3D per case",
        volume_markdown(results),
        VOLUME_DEFINITION,
        "## Checks",
        checks_markdown(results),
        "## Figures",
    ]
    captions = {
        "examples": "Best, median and worst tumour slices (GT boxes) of the best row, zoomed on the tumour: "
                    "cyan = ground-truth outline, red = prediction, yellow = box.",
        "distributions": "Distribution of slice Dice on tumour slices, per segmenter and box source.",
        "per_case": "Mean slice Dice per test case (tumour slices, GT boxes) and, when computed, 3D Dice.",
    }
    for key, rel in figures.items():
        parts.append(f"![{key}]({rel})\n\n{captions[key]}" if rel else f"*{captions[key]}* (no data to draw)")
    parts += ["## Files",
              "`metrics.json` (every table with intervals, settings), `per_case.csv` (case x segmenter x boxes), "
              "`slices.csv` (one Dice per slice x segmenter x boxes), `figures/`."]
    return "\n\n".join(parts) + "\n"


def _write_csv(path: Path, rows: list) -> None:
    """Rows (dicts or dataclass records) as CSV, columns in the first row's order."""
    rows = [asdict(r) if is_dataclass(r) else r for r in rows]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


def _savefig(fig, target: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zoom(s: dict, margin: int = 24, min_size: int = 96) -> tuple[int, int, int, int]:
    """A square-ish pixel window around the ground truth, prediction and boxes of one example slice."""
    h, w = s["gt"].shape
    ys, xs = np.nonzero(s["gt"] | s["pred"])
    b = np.asarray(s["boxes"]).reshape(-1, 4)
    xs = np.concatenate([xs, b[:, 0], b[:, 2]])
    ys = np.concatenate([ys, b[:, 1], b[:, 3]])
    if xs.size == 0:
        return 0, 0, w - 1, h - 1
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = max(min_size, xs.max() - xs.min() + 2 * margin, ys.max() - ys.min() + 2 * margin) / 2
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    return x0, y0, int(min(w - 1, cx + half)), int(min(h - 1, cy + half))


def figure_examples(examples: dict, target: Path) -> bool:
    if not examples or not examples.get("slices"):
        return False
    plt = _plt()
    from matplotlib.patches import Rectangle

    items = [(k, examples["slices"][k]) for k in ("best", "median", "worst") if k in examples["slices"]]
    fig, axes = plt.subplots(1, len(items), figsize=(4 * len(items), 4.3), squeeze=False)
    for ax, (label, s) in zip(axes[0], items):
        ax.imshow(s["image"])
        overlay = np.zeros((*s["pred"].shape, 4))
        overlay[s["pred"]] = (1, 0, 0, 0.35)
        ax.imshow(overlay)
        if s["pred"].any():
            ax.contour(s["pred"].astype(float), levels=[0.5], colors="red", linewidths=1)
        if s["gt"].any():
            ax.contour(s["gt"].astype(float), levels=[0.5], colors="cyan", linewidths=1)
        for b in np.asarray(s["boxes"]).reshape(-1, 4):
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0] + 1, b[3] - b[1] + 1, fill=False,
                                   edgecolor="yellow", linewidth=1))
        x0, y0, x1, y1 = _zoom(s)
        ax.set_xlim(x0 - 0.5, x1 + 0.5)
        ax.set_ylim(y1 + 0.5, y0 - 0.5)
        ax.set_title(f"{label}: {s['case']} z={s['z']}\nDice {s['dice']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(examples["segmenter"], fontsize=10)
    _savefig(fig, target)
    return True


def figure_distributions(results: dict, target: Path) -> bool:
    groups: dict[str, list[float]] = {}
    for s in results["slices"]:
        if s.tumour:
            tag = f" {s.region}" if _multi(results) else ""
            groups.setdefault(f"{s.segmenter}{tag}\n{_source_label(s.boxes)}", []).append(s.dice)
    if not groups:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.5))
    ax.boxplot(list(groups.values()), showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("slice Dice (tumour slices)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    _savefig(fig, target)
    return True


def figure_per_case(results: dict, target: Path) -> bool:
    first = ((results.get("dataset") or {}).get("regions") or [None])[0]
    rows = [r for r in results["per_case"] if r["boxes"] == "gt" and first in (None, r.get("region", first))]
    if not rows:
        return False
    plt = _plt()
    cases = sorted({r["case"] for r in rows})
    segs = list(dict.fromkeys(r["segmenter"] for r in rows))
    have_3d = any(math.isfinite(r["volume_dice"]) for r in rows)
    panels = [("slice_dice_tumour", "mean slice Dice (tumour slices, GT boxes)")]
    if have_3d:
        panels.append(("volume_dice", "3D volume Dice (GT boxes)"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.9 * len(cases) * len(segs)), 3.5 * len(panels)),
                             squeeze=False)
    width = 0.8 / max(1, len(segs))
    lookup = {(r["case"], r["segmenter"]): r for r in rows}
    for ax, (key, title) in zip(axes[:, 0], panels):
        for i, seg in enumerate(segs):
            vals = [lookup.get((c, seg), {}).get(key, float("nan")) for c in cases]
            ax.bar(np.arange(len(cases)) + i * width - 0.4 + width / 2, np.nan_to_num(vals), width, label=seg)
        ax.set_xticks(range(len(cases)), cases, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    _savefig(fig, target)
    return True


def _finite(obj):
    """NaN/inf -> None so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return None
    return obj


def _jsonable(results: dict) -> dict:
    """metrics.json: everything but the per-slice rows (slices.csv) and the example pixels."""
    out = {k: v for k, v in results.items() if k not in ("slices", "examples")}
    ex = results.get("examples") or {}
    out["examples"] = {"segmenter": ex.get("segmenter"),
                       "slices": {k: {f: s[f] for f in ("case", "z", "dice")} for k, s in ex.get("slices", {}).items()}}
    return _finite(out)


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write the report folder; returns the written paths: ``report``, ``metrics``, ``per_case_csv``,
    ``slices_csv`` and ``figure_<name>`` for each figure drawn (names as in :data:`FIGURES`)."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    drawn = {
        "examples": figure_examples(results.get("examples") or {}, out / FIGURES["examples"]),
        "distributions": figure_distributions(results, out / FIGURES["distributions"]),
        "per_case": figure_per_case(results, out / FIGURES["per_case"]),
    }
    figures = {k: (FIGURES[k] if ok else None) for k, ok in drawn.items()}
    paths = {"metrics": write_json(out / "metrics.json", _jsonable(results))}
    _write_csv(out / "per_case.csv", results["per_case"])
    _write_csv(out / "slices.csv", results["slices"])
    paths.update(per_case_csv=out / "per_case.csv", slices_csv=out / "slices.csv",
                 report=write_text(out / "report.md", report_markdown(results, figures)))
    paths.update({f"figure_{k}": out / v for k, v in figures.items() if v})
    return paths
