"""Batched per-slice tumour boxes from trained YOLO weights.

Frames: input slices are uint8 RGB ``(H, W, 3)`` (channel order = the dataset's modalities);
output boxes are inclusive pixel XYXY in each slice's own grid (see :mod:`bratsmedsam.boxes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..boxes import clip_xyxy, ultralytics_to_xyxy
from ..devices import ultralytics_device
from ..errors import UserError
from . import ultra
from .weights import DEFAULT_CONF, MIN_STORED_CONF, stored_threshold, weights_id


@dataclass
class SliceBoxes:
    """Boxes on one slice: ``xyxy`` float32 (n, 4) inclusive pixel XYXY, ``conf`` float32 (n,), best first."""

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    conf: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.conf)

    def rows(self, digits: int = 2) -> list[list[float]]:
        """``[[x0, y0, x1, y1, conf], ...]`` for JSON."""
        return [[round(float(v), digits) for v in b] + [round(float(c), 4)] for b, c in zip(self.xyxy, self.conf)]

    @classmethod
    def from_rows(cls, rows) -> "SliceBoxes":
        a = np.asarray(rows, np.float32).reshape(-1, 5)
        return cls(a[:, :4].copy(), a[:, 4].copy())


class Detector:
    """Trained YOLO weights -> per-slice boxes.

    ``conf``: minimum confidence kept; None (default) = the operating confidence that train-detector
    stored in the weights (max F1 on the validation split, see :mod:`.weights`), else 0.25.
    A stored confidence is floored at :data:`MIN_STORED_CONF`: a barely trained model's max-F1 point can
    sit near 0, where it would flood every slice with boxes (each one a segmenter call downstream).
    ``max_det``: at most this many boxes per slice (a BraTS slice rarely shows more than a few lesions).
    ``iou``: NMS IoU threshold. ``device`` None = CUDA when present. Inference runs at ``imgsz`` if
    given, else the model's training ``imgsz`` (stored in the weights), else 256.
    """

    def __init__(self, weights, device=None, conf: float | None = None, iou: float = 0.5,
                 imgsz: int | None = None, max_det: int = 5):
        self.weights = Path(weights).expanduser()
        if self.weights.suffix not in (".pt", ".pth") or not self.weights.is_file():
            raise UserError(f"detector weights {weights} do not exist (expected a .pt file from train-detector)")
        self.model = ultra.yolo(self.weights)
        if getattr(self.model, "task", "detect") != "detect":
            raise UserError(f"{weights} holds a YOLO {self.model.task} model, expected a detection model")
        self.device = ultralytics_device(device)
        self.stored_conf = stored_threshold(getattr(self.model, "ckpt", None))
        if conf is not None:
            self.conf = float(conf)
        elif self.stored_conf is not None:
            self.conf = max(float(self.stored_conf), MIN_STORED_CONF)
        else:
            self.conf = DEFAULT_CONF
        self.max_det = int(max_det)
        self.iou = float(iou)
        self.weights_id = weights_id(self.weights)
        self.imgsz = int(imgsz or (self.model.overrides or {}).get("imgsz") or 256)

    def _predict(self, batch, conf: float):
        """ultralytics' device selection sets torch's thread count for the whole process (to cores - 1: one
        thread on a 2-core machine), which would slow every other torch user in a server; it is put back."""
        import torch

        threads = torch.get_num_threads()
        try:
            return self.model.predict(batch, imgsz=self.imgsz, conf=conf, iou=self.iou, max_det=self.max_det,
                                      device=self.device, batch=len(batch), verbose=False, save=False)
        finally:
            torch.set_num_threads(threads)

    def predict(self, images, batch_size: int = 16, conf: float | None = None) -> list[SliceBoxes]:
        """Boxes for each uint8 RGB ``(H, W, 3)`` slice, in order; batches of ``batch_size`` per model call;
        ``conf``: keep boxes down to this confidence instead of the operating one (``self.conf``).

        All-zero slices (outside the head) get no boxes without a model call.
        """
        conf = self.conf if conf is None else float(conf)
        images = list(images)
        out = [SliceBoxes() for _ in images]
        todo = []
        for i, im in enumerate(images):
            im = np.asarray(im)
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise UserError(f"slice {i}: expected a uint8 (H, W, 3) RGB image, got {im.dtype} {im.shape}")
            if im.any():
                todo.append(i)
        for start in range(0, len(todo), max(1, int(batch_size))):
            idx = todo[start:start + batch_size]
            # ultralytics reads in-memory numpy images as BGR (OpenCV order): flip RGB -> BGR.
            batch = [np.ascontiguousarray(images[i][..., ::-1]) for i in idx]
            results = self._predict(batch, conf)
            for i, res in zip(idx, results):
                b = res.boxes
                if b is None or len(b) == 0:
                    continue
                h, w = images[i].shape[:2]
                scores = b.conf.cpu().numpy().astype(np.float32)
                order = np.argsort(-scores)
                xyxy = clip_xyxy(ultralytics_to_xyxy(b.xyxy.cpu().numpy()[order]), h, w)
                out[i] = SliceBoxes(xyxy.astype(np.float32), scores[order])
        return out
