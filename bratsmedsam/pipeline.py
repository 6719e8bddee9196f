"""The automatic chain: the detector on every axial slice, then the segmenter on each slice's boxes.

Frames as in :mod:`bratsmedsam.volume`: ``channels`` uint8 ``(X, Y, Z, 3)``, boxes inclusive pixel XYXY
on axial slice ``k`` (``boxes.axial_slice``), keyed by ``k``. ``channels`` is the segmenter's stack; the detector
reads ``detector_channels`` where its stack differs (same grid, other modalities: ``intensity.Stacks``).
"""

from __future__ import annotations

import numpy as np

from .boxes import axial_slice, expand_xyxy, mask_inside_xyxy
from .cleanup import MIN_COMPONENT_MM3, MIN_SUPPORT_CONF, remove_small_components, remove_unsupported_components
from .errors import UserError
from .protocols import SliceDetector, SliceSegmenter
from .volume import REFINE_MARGIN, VolumeResult, best_prompt, check_channels, propagate, segment_with_boxes

#: a 3D detector candidate whose best box is at least this confident seeds a propagation (the per-slice chain's
#: clean-up keeps the components such boxes support: ``cleanup.MIN_SUPPORT_CONF``)
SEED_CONF = MIN_SUPPORT_CONF
#: a candidate whose seed mask is this much segmented already is the same tumour as an earlier one
REACHED = 0.5
#: detector boxes down to this fraction of its operating confidence carry a seeded propagation's extent on (they
#: neither widen its prompts, nor seed, nor vouch): on real MRI a detector trained on synthetic cases boxes the
#: tumour with less confidence than on its validation cases. A fraction, so that the floor scales with the detector's
#: own confidences; measured on the real case (README "Weak boxes"): a half left the standard detector's
#: propagation 14 slices short of the tumour's end (3D Dice 0.71 against 0.84), a third and a flat 0.05 scored the
#: same (within 0.001) on every zero-shot row measured
WEAK_FRACTION = 1 / 3
#: ... and never under this confidence (``detection.weights.MIN_STORED_CONF``, the lowest operating point stored)
MIN_WEAK_CONF = 0.05


#: the volume-aware propagation's prompt margin (px around the previous slice's mask box) for a zero-shot decoder
ZERO_SHOT_MARGIN = 3.0
#: ... and for one fine-tuned with neighbour samples (``train-segmenter --neighbour-samples``, the default): it fills
#: a looser box, and at 3 px it drew the real tumour's thin end slices 2-20x larger than the tumour (README "Weak
#: boxes"). A weight mix ``(1 - a) x zero-shot + a x trained`` (``train-segmenter --mix``) takes the two margins mixed
#: the same way (:func:`propagation_margin`): the demo's 0.5 mix at 1 / 2 / 3 px scored the demo's validation cases
#: 0.787 / 0.795 / 0.781 (volume-aware 3D Dice, mean of 3; 2 px best on each) and the real case 0.888 / 0.887 / 0.888
#: (README "The weight mix's margin")
NEIGHBOUR_TRAINED_MARGIN = 1.0
#: a seed box is tried at these scales about its centre and the mask with the highest predicted IoU kept
#: (:func:`seed_prompt`). Measured on the demo's quick detector's seeds on 6 tumours (5 synthetic validation / test
#: cases and the real case): the highest predicted IoU picked the best-Dice scale, or one within 0.01 of it, on 5;
#: on the sixth 0.402 against 0.403 at x1 (best 0.509, x2.5). A 19 x 21 px box inside a 36 x 42 px tumour: seed Dice
#: 0.13 -> 0.81 (x2.5); the real case's box stayed x1
SEED_SCALES = (1.0, 1.25, 1.5, 2.0, 2.5)
#: a propagated slice whose mask has fewer than DIP_RATIO x the pixels of some slice within DIP_WINDOW slices on
#: each side is a dip (a tumour does not halve and regrow within a few millimetres): :func:`fill_dips` prompts it
#: again from its neighbours. Set a priori, then measured (README "Dips"): on the demo's test case, seeded on a box
#: that held half the tumour's slice, zero-shot 0.719 -> 0.739 (evaluate)
DIP_RATIO = 0.5
DIP_WINDOW = 3


def propagation_margin(segmenter) -> float:
    """The prompt margin the volume-aware chain uses with ``segmenter``: :data:`NEIGHBOUR_TRAINED_MARGIN` when its
    decoder's training record (``segmenter.meta``) says it trained on neighbour samples, else
    :data:`ZERO_SHOT_MARGIN`; for a weight mix of the two (the record's ``mix``, the trained share ``a``), the margins
    mixed by the same share. Records older than the ``neighbour_samples`` entry: its config asked for them, for
    one region (a multi-region run trains without them). A record of epoch 0 holds zero-shot's weights (no epoch
    beat them on validation): zero-shot's margin, whatever its config asked for (at 1 px those weights followed the
    real case's tumour to 3D Dice 0.435, against 0.857 at 3 px)."""
    meta = getattr(segmenter, "meta", None) or {}
    config = meta.get("config") or {}
    trained = meta.get("neighbour_samples", bool(config.get("neighbour_samples")) and not config.get("regions"))
    if not trained or meta.get("epoch") == 0:
        return ZERO_SHOT_MARGIN
    share = float(meta.get("mix", 1.0))
    return (1.0 - share) * ZERO_SHOT_MARGIN + share * NEIGHBOUR_TRAINED_MARGIN


def weak_floor(operating: float, fraction: float = WEAK_FRACTION) -> float:
    """The lowest confidence of a weak box for a detector operating at ``operating``."""
    return max(MIN_WEAK_CONF, fraction * float(operating))


def detect_volume(channels: np.ndarray, detector: SliceDetector, postprocess: bool = False,
                  min_conf: float | None = None) -> tuple[dict, dict]:
    """Run the detector over every axial slice -> ``(boxes {k: (n,4) xyxy}, conf {k: (n,)})``, empty slices left out;
    ``min_conf``: down to this confidence instead of the detector's operating one."""
    check_channels(channels)
    images = [axial_slice(channels, k) for k in range(channels.shape[2])]
    found = detector.predict(images) if min_conf is None else detector.predict(images, conf=min_conf)
    if postprocess:
        from .detection.postprocess import postprocess_volume

        found = postprocess_volume(found)
    boxes, conf = {}, {}
    for k, sb in enumerate(found):
        if len(sb.xyxy):
            boxes[k] = np.asarray(sb.xyxy, np.float32).reshape(-1, 4)
            conf[k] = np.asarray(sb.conf, np.float32).reshape(-1)
    return boxes, conf


def detect_with_weak(channels: np.ndarray, detector: SliceDetector,
                     fraction: float = WEAK_FRACTION) -> tuple[dict, dict, dict]:
    """:func:`detect_volume`'s boxes and confidences at the detector's operating point (its ``conf``), and its weak
    boxes: those down to :func:`weak_floor` (``{k: (n, 4)}``, the detections among them), from one detector pass at
    the lower confidence. A detector without an operating ``conf`` above that floor gives its detections as the
    weak boxes."""
    operating = getattr(detector, "conf", None)
    floor = None if operating is None else weak_floor(operating, fraction)
    if floor is None or float(operating) <= floor:
        boxes, conf = detect_volume(channels, detector)
        return boxes, conf, boxes
    weak, scores = detect_volume(channels, detector, min_conf=floor)
    boxes, conf = {}, {}
    for k, c in scores.items():
        keep = c >= float(operating)
        if keep.any():
            boxes[k], conf[k] = weak[k][keep], c[keep]
    return boxes, conf, weak


def detector_input(channels: np.ndarray, detector_channels: np.ndarray | None) -> np.ndarray:
    """The detector's stack: ``detector_channels`` (checked to share the segmenter stack's grid), else ``channels``."""
    if detector_channels is None:
        return channels
    check_channels(detector_channels)
    if detector_channels.shape != channels.shape:
        raise UserError(f"the detector's stack has shape {detector_channels.shape}, the segmenter's "
                        f"{channels.shape}: both must stack the same study")
    return detector_channels


def detect_and_segment(channels: np.ndarray, detector: SliceDetector, segmenter: SliceSegmenter,
                       postprocess: bool = False, progress: bool = False,
                       min_component_mm3: float = MIN_COMPONENT_MM3,
                       spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                       support_conf: float = MIN_SUPPORT_CONF,
                       detector_channels: np.ndarray | None = None,
                       refine: float = REFINE_MARGIN) -> VolumeResult:
    """Detector on all slices, then the segmenter on each slice's detected boxes, each prompted once more with its
    mask's box + ``refine`` px (``volume.segment_with_boxes``; 0: the detector's boxes alone) -> 3D mask, cleaned in
    3D (:func:`clean_per_slice`): 26-connected components no box of confidence >= ``support_conf`` lies on, and those
    under ``min_component_mm3``, are removed (``min_component_mm3 = 0`` and ``support_conf = 0``: all kept)."""
    boxes, conf = detect_volume(detector_input(channels, detector_channels), detector, postprocess=postprocess)
    result = segment_with_boxes(channels, boxes, segmenter, progress=progress, refine=refine)
    result.conf = conf
    result.label = clean_per_slice(result.label, boxes, conf, min_component_mm3, spacing, support_conf)
    return result


def clean_per_slice(label: np.ndarray, boxes: dict, conf: dict, min_component_mm3: float = MIN_COMPONENT_MM3,
                    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    support_conf: float = MIN_SUPPORT_CONF) -> np.ndarray:
    """The per-slice chain's 3D clean-up of ``label``: unsupported components (``cleanup.remove_unsupported_
    components`` with the detections ``boxes``/``conf``), then small ones (``cleanup.remove_small_components``)."""
    if support_conf > 0:
        label = remove_unsupported_components(label, boxes, conf, support_conf).label
    return remove_small_components(label, min_component_mm3, spacing).label


def detect_and_propagate(channels: np.ndarray, detector: SliceDetector, segmenter: SliceSegmenter,
                         seed_conf: float = SEED_CONF, reach: int = 3, grow: float = 10.0, margin: float | None = None,
                         min_pixels: int = 10, stop_iou: float = 0.5, min_component_mm3: float = MIN_COMPONENT_MM3,
                         spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                         detector_channels: np.ndarray | None = None,
                         support_conf: float = MIN_SUPPORT_CONF) -> VolumeResult:
    """Volume-aware automatic segmentation: the detector proposes, the segmenter follows each tumour.

    1. The detector runs on every axial slice; its boxes are merged into 3D candidates (``slicer.merge_boxes_3d``).
    2. A candidate whose best box has confidence >= ``seed_conf`` is segmented on that box's slice (the seed; the box
       tried at :data:`SEED_SCALES`, :func:`seed_prompt`), then :func:`volume.propagate` follows the mask slice by slice
       both ways, each slice prompted with the previous mask's box grown by ``margin`` px (None:
       :func:`propagation_margin`) and united with the detector's boxes it overlaps on that slice (unless the prompt
       without them gives a mask predicted better by more than ``volume.HINT_TOLERANCE``), kept inside the candidate's
       footprint grown by ``grow`` px, until the mask ends or the predicted IoU drops under ``stop_iou``, at most
       ``reach`` slices past the detected extent (the thin ends the detector misses). The extent follows the detector's
       boxes (down to :func:`weak_floor`) that overlap the propagated box, so weak boxes within ``reach`` slices of its
       end carry the propagation on (on the real case with the standard quick detector of stop 22: 3D Dice 0.829 ->
       0.883 zero-shot, 0.837 -> 0.879 fine-tuned; no measured row lost, README "Automatic segmentation on real MRI"). A
       candidate whose seed mask is already at least :data:`REACHED` segmented is a tumour an earlier propagation
       followed; skipped.
       Then, with ``adjacent``, every candidate under ``seed_conf`` next to a propagated mask seeds too: one whose
       footprint (grown by ``grow`` px) holds such a mask within ``reach`` slices of its extent, or one inside a
       chain of the detector's weak boxes (``merge_boxes_3d`` of them) whose extent holds one. It is a piece of the
       same tumour the propagation lost: on the demo's validation case 90003 the lead candidate's masks drifted off
       the tumour 5 slices past its boxes, and the detector had boxed the tumour's lower part at 0.10-0.12 as a
       candidate of its own (volume-aware 3D Dice 0.263 -> 0.696 zero-shot; a fine-tuned decoder at 3 px stopped 5
       slices short of that candidate, where the weak boxes' chain still joined them: 0.265 -> 0.697; README
       "Adjacent candidates and the hint tolerance"). A piece left apart from the tumour is still removed by the
       clean-up (step 5) unless a box vouches for it.
    3. Then every box of confidence >= ``seed_conf`` (most confident first) that the propagations left mostly
       unsegmented seeds one of its own the same way: a second lesion whose boxes touch the first one's is merged
       into its candidate by ``merge_boxes_3d``, and the candidate's one seed follows one lesion (the demo's test
       case: a 900-voxel satellite beside the tumour, lesion-wise Dice 0.433 -> 0.804 fine-tuned).
    4. Other candidates under ``seed_conf`` (not beside a propagated mask) contribute nothing: detector boxes that no
       propagation confirms are dropped. The lead candidate always seeds, first (a detector whose confidences all
       fall under ``seed_conf`` still yields its best guess): the one with the most 3D evidence
       (:func:`lead_candidate`: the sum of its slices' best confidences, ``slicer.evidence_3d``), not the one most
       confident box: on a synthetic test case the demo's detector boxed the tumour at up to 0.29 on 16 slices and a
       stray spot at the brain's base at 0.30 on 4, and the stray spot was all that got segmented (3D Dice 0.00; 0.60
       with the tumour leading, README "Lead candidate, seed scales and hint checks"). Slices whose masks dip under
       their neighbours' on both sides are prompted again from those neighbours (:func:`fill_dips`).
    5. The 3D clean-up of the per-slice chain (:func:`clean_per_slice`): components no detection vouches for (a
       fragment the segmenter left beside the tumour in its box; a lesion one box under ``cleanup.SURE_CONF`` saw
       on one slice alone), then those under ``min_component_mm3`` (:mod:`bratsmedsam.cleanup`).

    In steps 2 and 3 the detector's boxes down to a third of its operating confidence (:func:`detect_with_weak`)
    move the extent too; they neither widen a prompt, nor seed, nor vouch. A quick detector trained on synthetic
    cases boxed the real case's tumour at 0.17-0.35, with gaps of 4 slices and more between its boxes at its
    operating point (0.17): its propagation stopped 29 slices short of the tumour's end (zero-shot 3D Dice 0.31);
    following its weak boxes it reached both ends (0.84).
    """
    boxes, conf, weak = detect_with_weak(detector_input(channels, detector_channels), detector)
    return propagate_detections(channels, boxes, conf, segmenter, seed_conf, reach, grow, margin, min_pixels,
                                stop_iou, min_component_mm3, spacing, support_conf, weak=weak)


def propagate_detections(channels: np.ndarray, boxes: dict, conf: dict, segmenter: SliceSegmenter,
                         seed_conf: float = SEED_CONF, reach: int = 3, grow: float = 10.0, margin: float | None = None,
                         min_pixels: int = 10, stop_iou: float = 0.5, min_component_mm3: float = MIN_COMPONENT_MM3,
                         spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                         support_conf: float = MIN_SUPPORT_CONF, weak: dict | None = None,
                         dips: bool = True, adjacent: bool = True) -> VolumeResult:
    """Steps 1-5 of :func:`detect_and_propagate` on detections already made (:func:`detect_with_weak`'s output;
    ``weak`` None: no boxes under the operating point; ``dips`` False: no :func:`fill_dips`; ``adjacent`` False:
    unconfident candidates beside a propagated mask do not seed)."""
    from .slicer import merge_boxes_3d

    margin = propagation_margin(segmenter) if margin is None else float(margin)

    X, Y, Z, _ = channels.shape
    image = np.array([0, 0, X - 1, Y - 1], np.float32)  # a limit box growing stops at
    result = VolumeResult(label=np.zeros((X, Y, Z), bool), conf=conf)
    candidates = merge_boxes_3d(boxes, conf, (X, Y, Z))  # most confident first
    lead = lead_candidate(candidates)
    for cand in ([lead] if lead is not None else []) + [c for c in candidates if c is not lead]:
        if cand.conf < seed_conf and cand is not lead:  # the lead always seeds: a study is opened for a tumour
            continue
        i0, i1, j0, j1, k0, k1 = cand.roi_ijk
        limit = expand_xyxy((i0, j0, i1, j1), grow, image)
        seed, box = _best_box(boxes, conf, k0, k1, (i0, i1, j0, j1))
        _follow(channels, segmenter, result, seed, box, limit, (k0, k1), boxes, weak, reach, margin, min_pixels,
                stop_iou)
    # candidates too unconfident to seed, next to a propagated mask (within reach slices, or joined to it by a chain
    # of weak boxes): pieces of its tumour the propagation lost
    chains = merge_boxes_3d(weak, {k: np.ones(len(b), np.float32) for k, b in weak.items()}, (X, Y, Z)) \
        if adjacent and weak else []
    for cand in candidates if adjacent else ():
        if cand is lead or cand.conf >= seed_conf:
            continue  # seeded above
        i0, i1, j0, j1, k0, k1 = cand.roi_ijk
        limit = expand_xyxy((i0, j0, i1, j1), grow, image)
        x0, y0, x1, y1 = (int(v) for v in limit)
        near = result.label[x0:x1 + 1, y0:y1 + 1, max(0, k0 - reach):k1 + reach + 1].any()
        for chain in chains if not near else ():
            a0, a1, b0, b1, c0, c1 = chain.roi_ijk
            if a0 <= i0 and i1 <= a1 and b0 <= j0 and j1 <= b1 and c0 <= k0 and k1 <= c1:
                near = bool(result.label[a0:a1 + 1, b0:b1 + 1, c0:c1 + 1].any())
                break
        if near:
            seed, box = _best_box(boxes, conf, k0, k1, (i0, i1, j0, j1))
            _follow(channels, segmenter, result, seed, box, limit, (k0, k1), boxes, weak, reach, margin, min_pixels,
                    stop_iou)
    # second pass: a confident box the propagations left unsegmented (a lesion merged into another one's candidate
    # because their boxes touch) seeds a propagation of its own
    for c, k, b in sorted(((float(c), int(k), np.asarray(b, np.float32)) for k, bs in boxes.items()
                           for b, c in zip(np.asarray(bs).reshape(-1, 4), conf.get(k, ()))), key=lambda t: -t[0]):
        if c < seed_conf:
            break
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        inside = axial_slice(result.label, k)[y0:y1 + 1, x0:x1 + 1]
        # a box over a segmented centre, or mostly segmented, is one the propagations followed (no decoder call)
        if not inside.size or inside[inside.shape[0] // 2, inside.shape[1] // 2] or inside.mean() >= REACHED:
            continue
        _follow(channels, segmenter, result, k, b, expand_xyxy((x0, y0, x1, y1), grow, image), (k, k), boxes,
                weak, reach, margin, min_pixels, stop_iou)
    if dips:
        fill_dips(channels, segmenter, result, margin, grow, stop_iou)
    result.label = clean_per_slice(result.label, boxes, conf, min_component_mm3, spacing, support_conf)
    return result


def fill_dips(channels: np.ndarray, segmenter: SliceSegmenter, result: VolumeResult, margin: float, grow: float = 10.0,
              stop_iou: float = 0.5, ratio: float = DIP_RATIO, window: int = DIP_WINDOW, rounds: int = 4) -> int:
    """Prompt every dip of ``result.label`` again; returns how many slices grew.

    A segmented slice ``k`` is a dip when some slice within ``window`` below it and some slice within ``window``
    above it each have more than ``1 / ratio`` times its mask pixels (an end that tapers is not a dip: one side is
    smaller). Its prompt: the box around the nearest such slice's mask on each side - their 8-connected components
    within ``grow`` px of the dip's own mask, so that another lesion on those slices is left out - grown by
    ``margin``. The new mask (kept inside that box + ``grow``) is united into the slice when it is larger and its
    predicted IoU is at least ``stop_iou``. Up to ``rounds`` sweeps: a dip of several slices fills from its edges.
    Where it came from: a seed box that held half the tumour's slice (the demo's test case) gave its slice and the
    next ones half a mask, while the propagation, widened by the detector's boxes, had the whole tumour 2 slices on."""
    from scipy import ndimage

    from .boxes import mask_to_xyxy

    X, Y, Z = result.label.shape
    image = np.array([0, 0, X - 1, Y - 1], np.float32)
    grown = 0
    for _ in range(rounds):
        area = result.label.sum(axis=(0, 1))
        changed = False
        for k in (int(k) for k in np.flatnonzero(area)):
            below = [j for j in range(max(0, k - window), k) if area[j] * ratio > area[k]]
            above = [j for j in range(k + 1, min(Z, k + window + 1)) if area[j] * ratio > area[k]]
            if not below or not above:
                continue
            near = expand_xyxy(mask_to_xyxy(axial_slice(result.label, k)), grow, image)
            parts = []
            for j in (max(below), min(above)):  # the nearest larger mask on each side
                cc, n = ndimage.label(axial_slice(result.label, j), structure=np.ones((3, 3), bool))
                x0, y0, x1, y1 = (int(round(v)) for v in near)
                for c in set(np.unique(cc[y0:y1 + 1, x0:x1 + 1])) - {0}:
                    parts.append(mask_to_xyxy(cc == c))
            if not parts:
                continue
            parts = np.asarray(parts, np.float32)
            box = expand_xyxy(np.concatenate([parts[:, :2].min(0), parts[:, 2:].max(0)]), margin, image)
            seg = segmenter.segment(axial_slice(channels, k), box[None])
            mask = mask_inside_xyxy(np.asarray(seg.masks[0], bool), expand_xyxy(box, grow, image))
            if mask.sum() > area[k] and float(np.asarray(seg.iou).reshape(-1)[0]) >= stop_iou:
                result.add(k, mask, box, seg.iou)
                area[k] = int(axial_slice(result.label, k).sum())
                changed = True
                grown += 1
        if not changed:
            break
    return grown


def seed_prompt(segmenter: SliceSegmenter, image: np.ndarray, box: np.ndarray, limit: np.ndarray,
                scales=SEED_SCALES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seed's prompt: ``box`` scaled about its centre by each of ``scales`` (kept inside ``limit``), all decoded
    in one call; the one whose mask the segmenter predicts best (highest predicted IoU; ties: the smaller box)
    -> ``(box, mask inside limit, predicted IoU (1,))``. A detector trained on synthetic cases often boxes a
    tumour's inner part, and a zero-shot decoder then draws an inner blob whose box never grows (module
    :data:`SEED_SCALES`)."""
    c, h = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
    tried = [np.concatenate([np.maximum(c - h * s, limit[:2]), np.minimum(c + h * s, limit[2:])]) for s in scales]
    return best_prompt(segmenter, image, tried, limit)  # the first of equal ones: the smaller box


def _follow(channels: np.ndarray, segmenter: SliceSegmenter, result: VolumeResult, k: int, box: np.ndarray,
            limit: np.ndarray, extent: tuple[int, int], hints: dict, weak: dict | None, reach: int, margin: float,
            min_pixels: int, stop_iou: float) -> None:
    """Seed on slice ``k`` with ``box`` and propagate (:func:`volume.propagate`) - unless the seed mask has fewer
    than ``min_pixels`` pixels or is at least :data:`REACHED` segmented already (a tumour an earlier seed followed;
    a second lesion on slices the first one also crosses still seeds)."""
    box, mask, iou = seed_prompt(segmenter, axial_slice(channels, k), box, limit)
    if mask.sum() < min_pixels or (mask & axial_slice(result.label, k)).sum() >= REACHED * mask.sum():
        return
    result.add(k, mask, box, iou)
    propagate(channels, segmenter, result, k, mask, (0, result.label.shape[2] - 1), limit, margin, min_pixels,
              stop_iou, hints=hints, extent=extent, reach=reach, weak=weak)


def lead_candidate(candidates: list):
    """The candidate (``slicer.Box3D``) the detector saw most strongly as a volume: the highest 3D evidence
    (``slicer.evidence_3d``: the sum of its slices' best confidences), ties to the more confident one; None without
    candidates."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (round(c.evidence, 6), c.conf))


def _best_box(boxes: dict, conf: dict, k0: int, k1: int, footprint) -> tuple[int, np.ndarray]:
    """The most confident detector box whose top-left corner lies in the candidate's footprint (equal confidence:
    the larger box, nearer the tumour's middle): ``(k, xyxy)``."""
    i0, i1, j0, j1 = footprint
    best = ((-1.0, -1.0), k0, None)
    for k in range(k0, k1 + 1):
        for b, c in zip(boxes.get(k, ()), conf.get(k, ())):
            rank = (float(c), float((b[2] - b[0] + 1) * (b[3] - b[1] + 1)))
            if i0 <= round(float(b[0])) <= i1 and j0 <= round(float(b[1])) <= j1 and rank > best[0]:
                best = (rank, k, np.asarray(b, np.float32))
    return best[1], best[2]



#: how the automatic chain segments a volume: ``propagate`` (volume-aware, the default: measured better on the real
#: case, README "Automatic segmentation on real MRI") or ``slices`` (every detected box on its own slice, the
#: paper's, each box prompted a second time from its mask: :func:`detect_and_segment`)
AUTO_MODES = ("propagate", "slices")


def segment_automatic(channels: np.ndarray, detector: SliceDetector, segmenter: SliceSegmenter,
                      mode: str = "propagate", postprocess: bool = False,
                      min_component_mm3: float = MIN_COMPONENT_MM3,
                      spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), progress: bool = False,
                      detector_channels: np.ndarray | None = None) -> VolumeResult:
    """The automatic chain in ``mode`` (:data:`AUTO_MODES`); ``postprocess`` (the detector's box clean-up) applies
    to ``slices``; ``detector_channels``: the detector's stack where it is not ``channels``."""
    if mode == "propagate":
        return detect_and_propagate(channels, detector, segmenter, min_component_mm3=min_component_mm3,
                                    spacing=spacing, detector_channels=detector_channels)
    if mode == "slices":
        return detect_and_segment(channels, detector, segmenter, postprocess=postprocess, progress=progress,
                                  min_component_mm3=min_component_mm3, spacing=spacing,
                                  detector_channels=detector_channels)
    raise UserError(f"automatic mode {mode!r}: expected one of {', '.join(AUTO_MODES)}")
