"""Active learning: score unlabelled studies by model uncertainty; serve the least certain one."""

from __future__ import annotations

import logging

from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from tqdm import tqdm

from bratsmedsam.errors import UserError
from bratsmedsam.studies import load_study
from bratsmedsam.uncertainty import UncertaintyStore, study_uncertainty

logger = logging.getLogger(__name__)


class UncertaintyScoring(ScoringMethod):
    """Stores ``bratsmedsam.uncertainty`` scores of every unlabelled study; skips studies already scored
    by the current models (so a retrain, which changes the model ids, refreshes them all)."""

    def __init__(self, store, cfg):
        super().__init__("Detector confidence + segmenter predicted IoU + box/mask disagreement per study")
        self.models, self.cfg = store, cfg

    def __call__(self, request, datastore):
        try:
            det, seg = self.models.detector(), self.models.segmenter()
        except UserError as exc:
            logger.warning(f"uncertainty scoring skipped: {exc}")
            return {"scored": 0, "reason": str(exc)}
        store = UncertaintyStore(self.cfg.uncertainty_path)
        models = {"detector": det.weights_id, "segmenter": seg.model_id}
        todo = [i for i in datastore.get_unlabeled_images(DefaultLabelTag.FINAL) if not store.is_current(i, models)]
        for image_id in tqdm(todo, desc="uncertainty", unit="study"):
            try:
                study = load_study(datastore.get_image_uri(image_id), self.cfg.stacks)
            except UserError as exc:
                logger.warning(f"{image_id}: not scored: {exc}")
                continue
            store.put(image_id, study_uncertainty(study.channels, det, seg, self.cfg.uncertainty_z_step,
                                                  self.cfg.uncertainty_max_slices,
                                                  detector_channels=study.detector_channels))
        return {"scored": len(todo)}


class MostUncertain(Strategy):
    def __init__(self, cfg):
        super().__init__("The unlabelled study the current models are least sure of (see scoring 'uncertainty')")
        self.cfg = cfg

    def __call__(self, request, datastore):
        candidates = sorted(datastore.get_unlabeled_images(DefaultLabelTag.FINAL))
        best, info = UncertaintyStore(self.cfg.uncertainty_path).most_uncertain(candidates)
        if best is None:
            return None
        return {"id": best, "uncertainty": info}
