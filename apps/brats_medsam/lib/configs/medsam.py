"""Model ``medsam``: the MedSAM-family segmenter prompted by Slicer's ROI or clicks; its mask decoder is
fine-tuned on the final labels.

Published file: ``<model_dir>/medsam_decoder.pt`` (``GET/PUT/DELETE /model/medsam``); without it the base
checkpoint's decoder serves.
"""

from __future__ import annotations

from pathlib import Path

from monailabel.interfaces.config import TaskConfig

from bratsmedsam.errors import UserError

from ..infers.medsam import MedSamInfer
from ..trainers.medsam import MedSamTrain


class MedSam(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.cfg, self.store, self.prefetch = kwargs["settings"], kwargs["store"], kwargs["prefetch"]
        self.path = self.cfg.decoder_path

    def infer(self):
        return {self.name: MedSamInfer(self.store, self.cfg, self.prefetch)}

    def trainer(self):
        return MedSamTrain(self.cfg)

    def check_file(self, path: str | Path) -> None:
        """Raise ``UserError`` unless ``path`` is a decoder that fits the configured base segmenter."""
        from bratsmedsam.segmenter import load_segmenter

        try:
            load_segmenter(self.cfg.segmenter_base, self.cfg.segmenter_checkpoint, decoder=path, device="cpu",
                           backend="torch")
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{type(exc).__name__}: {exc}") from None
