"""Retrain the YOLO detector on the ``final`` labels; publish its best weights for the infer tasks."""

from __future__ import annotations

from monailabel.interfaces.tasks.train import TrainTask

from bratsmedsam.studies import labelled_studies

from .common import publish, run_dir, split_for


class DetectorTrain(TrainTask):
    def __init__(self, cfg):
        super().__init__("Retrain the YOLO tumour detector on the final labels")
        self.cfg = cfg

    def config(self):
        from bratsmedsam.detection.training import QUICK

        return {"max_epochs": self.cfg.detector_epochs or QUICK["epochs"]}

    def __call__(self, request, datastore):
        from bratsmedsam.detector import train_detector
        from bratsmedsam.prepare import PrepareConfig, prepare_dataset

        cfg = self.cfg
        run = run_dir(cfg.model_dir, "detector")
        studies, skipped = labelled_studies(datastore.datalist(), run / "studies", cfg.detector_channels, cfg.region,
                                            cfg.labels.values())
        n = sum(1 for p in studies.iterdir() if p.is_dir())
        prepare_dataset(studies, run / "dataset", PrepareConfig(detector_channels=cfg.detector_channels,
                                                               segmenter_channels=cfg.detector_channels,
                                                               region=cfg.dataset_region, split=split_for(n)),
                    workers=1)  # the detector's images only
        best = train_detector(run / "dataset" / "dataset.yaml", run / "yolo", quick=True,
                              epochs=int(request.get("max_epochs") or cfg.detector_epochs or 0) or None,
                              device=cfg.device)
        publish(best, cfg.detector_path)
        return {"published": str(cfg.detector_path), "cases": n, "skipped_labels": skipped}
