"""The detector's public face (paper III.B): YOLO training, batched per-slice boxes, volume
post-processing and evaluation. The code lives in :mod:`bratsmedsam.detection`; import from here.

Boxes are inclusive pixel XYXY on axial slices (``image = vol[:, :, k].T``, see :mod:`bratsmedsam.boxes`).
"""

from .detection.evaluation import evaluate_detector
from .detection.postprocess import postprocess_volume
from .detection.predict import Detector, SliceBoxes
from .detection.training import PAPER, QUICK, train_detector

__all__ = ["Detector", "SliceBoxes", "train_detector", "postprocess_volume", "evaluate_detector",
           "PAPER", "QUICK"]
