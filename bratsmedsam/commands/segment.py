"""``segment``: one study -> 3D label NIfTI, from given boxes or the detector's, with the input's affine."""

from __future__ import annotations

import json
from pathlib import Path

from ..pipeline import AUTO_MODES
from ._stacks import add_stack_arguments, given_stacks


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment one study with boxes (JSON) or a detector -> label NIfTI",
                       description="Boxes JSON: {\"<k>\": [[x0, y0, x1, y1], ...]} (pixel XYXY, inclusive, on axial "
                       "slice k: x = voxel i, y = voxel j) or {\"roi\": [i0, i1, j0, j1, k0, k1]} (Slicer IJK ROI).")
    p.add_argument("--case", type=Path, required=True, help="a BraTS case folder or one of its modality files")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--boxes", type=Path, help="boxes JSON (see above)")
    src.add_argument("--detector", type=Path, help="YOLO weights: detect on every slice, then segment")
    p.add_argument("--auto", choices=AUTO_MODES, default="propagate",
                   help="with --detector: propagate the masks of confident detections through the volume, or "
                        "segment every detected box on its slice")
    p.add_argument("--decoder", type=Path, help="fine-tuned mask decoder checkpoint")
    p.add_argument("--base", default="litemedsam", help="segmenter family (litemedsam, medsam, sam)")
    p.add_argument("--checkpoint", type=Path, help="base segmenter checkpoint (default: the packaged one)")
    add_stack_arguments(p, "the one the model records (a model trained on other channels is refused)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="output label (.nii.gz); value 1 = tumour")
    p.set_defaults(func=run)


def read_boxes(path: Path):
    """-> ``("roi", [6 numbers])`` or ``("boxes", {k: (n, 4) array})``."""
    import numpy as np

    from ..errors import UserError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read boxes JSON ({exc})") from None
    if isinstance(data, dict) and "roi" in data:
        return "roi", data["roi"]
    try:
        return "boxes", {int(k): np.asarray(v, np.float32).reshape(-1, 4) for k, v in data.items()}
    except (AttributeError, TypeError, ValueError):
        raise UserError(f"{path}: expected {{\"<k>\": [[x0, y0, x1, y1], ...]}} or {{\"roi\": [i0, i1, j0, j1, k0, k1]}}") from None


def run(args) -> int:
    import time

    from ..boxes import RoiIJK
    from ..channel_check import resolve_stacks
    from ..pipeline import segment_automatic
    from ..studies import load_study, write_label
    from ..volume import segment_roi, segment_with_boxes
    from ..segmenter import load_segmenter

    t0 = time.time()
    study = load_study(args.case, resolve_stacks(*given_stacks(args), args.detector, args.decoder),
                       display=("t1c", "t2f"))
    seg = load_segmenter(args.base, args.checkpoint, decoder=args.decoder, device=args.device)
    if args.boxes:
        kind, boxes = read_boxes(args.boxes)
        if kind == "roi":
            res = segment_roi(study.channels, RoiIJK.from_slicer(boxes, study.channels.shape[:3]), seg)
        else:
            res = segment_with_boxes(study.channels, boxes, seg, progress=True)
    else:
        from ..detector import Detector

        det = Detector(args.detector, device=args.device)
        res = segment_automatic(study.channels, det, seg, args.auto, progress=True, spacing=study.spacing,
                                detector_channels=study.detector_channels)
    write_label(res.label, study.reference, args.out)
    note = " (single modality in all channels)" if study.single_modality else ""
    print(f"{study.case_id}: {int(res.label.sum())} voxels on {len(res.slices)} slices -> {args.out}{note} "
          f"[{time.time() - t0:.1f} s, {seg.model_id}]")
    return 0
