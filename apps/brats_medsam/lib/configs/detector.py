"""Model ``detector``: YOLO tumour boxes on every axial slice (Markups ROI JSON), retrained on the final labels.

Published file: ``<model_dir>/detector.pt`` (``GET/PUT/DELETE /model/detector``).
"""

from __future__ import annotations

from pathlib import Path

from monailabel.interfaces.config import TaskConfig

from bratsmedsam.errors import UserError

from ..infers.detector import DetectorInfer
from ..trainers.detector import DetectorTrain


class Detector(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.cfg, self.store, self.prefetch = kwargs["settings"], kwargs["store"], kwargs["prefetch"]
        self.path = self.cfg.detector_path

    def infer(self):
        return {self.name: DetectorInfer(self.store, self.cfg, self.prefetch)}

    def trainer(self):
        return DetectorTrain(self.cfg)

    def check_file(self, path: str | Path) -> None:
        """Raise ``UserError`` unless ``path`` loads as YOLO detection weights."""
        from bratsmedsam.detector import Detector as YoloDetector

        try:
            YoloDetector(path, device="cpu")
        except UserError:
            raise
        except Exception as exc:  # ultralytics raises many kinds on a bad file
            raise UserError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
