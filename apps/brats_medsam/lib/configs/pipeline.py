"""Model ``pipeline``: the detector on every axial slice, then the segmenter on each detected box (automatic);
with both networks it also scores unlabelled studies for active learning (``uncertainty``).

No file of its own: it serves the ``detector`` and ``medsam`` files.
"""

from __future__ import annotations

from monailabel.interfaces.config import TaskConfig

from ..activelearning.uncertainty import MostUncertain, UncertaintyScoring
from ..infers.pipeline import PipelineInfer


class Pipeline(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.cfg, self.store, self.prefetch = kwargs["settings"], kwargs["store"], kwargs["prefetch"]

    def infer(self):
        return {self.name: PipelineInfer(self.store, self.cfg, self.prefetch)}

    def trainer(self):
        return None

    def strategy(self):
        return {"uncertainty": MostUncertain(self.cfg)}

    def scoring_method(self):
        return {"uncertainty": UncertaintyScoring(self.store, self.cfg)}
