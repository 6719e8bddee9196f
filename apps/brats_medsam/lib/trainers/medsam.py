"""Fine-tune the MedSAM mask decoder on the ``final`` labels; publish it for the infer tasks. In the BraTS mode the
submitted label maps train the WT, TC and ET heads of the one decoder together (one checkpoint)."""

from __future__ import annotations

import logging

from monailabel.interfaces.tasks.train import TrainTask

from bratsmedsam.studies import labelled_studies

from .common import publish, run_dir, split_for

logger = logging.getLogger(__name__)


def _prepare_openvino(cfg) -> None:
    """Convert the published decoder (every region's head in one model) for OpenVINO here, in the training process,
    so the server's first prompt after a training reads the converted model instead of converting it (measured 89 s
    for the former three per-region decoders on the loaded 2-core CPU). The converted files are keyed by the
    published file's SHA-256; a failure only costs that first prompt the conversion."""
    from bratsmedsam.segmenter import load_segmenter

    try:
        seg = load_segmenter(cfg.segmenter_base, cfg.segmenter_checkpoint, decoder=cfg.decoder_path, device=cfg.device,
                             backend=cfg.encoder_backend, precision=cfg.encoder_precision, cache_size=0,
                             regions=cfg.regions if cfg.multi else None)
        seg.prepare_decoders()
    except Exception as exc:  # the server converts on first use instead
        logger.warning(f"OpenVINO decoders not prepared after training: {exc}")


class MedSamTrain(TrainTask):
    def __init__(self, cfg):
        super().__init__("Fine-tune the mask decoder (DiceCE, frozen encoders) on the final labels")
        self.cfg = cfg

    def config(self):
        return {"max_epochs": self.cfg.train_epochs, "max_train_slices": self.cfg.train_max_slices or 0}

    def __call__(self, request, datastore):
        from bratsmedsam.prepare import PrepareConfig, prepare_dataset
        from bratsmedsam.segmenter import FinetuneConfig, train_decoder

        cfg = self.cfg
        items = datastore.datalist()
        run = run_dir(cfg.model_dir, "medsam")
        studies, skipped = labelled_studies(items, run / "studies", cfg.segmenter_channels, cfg.region,
                                            cfg.labels.values())
        n = sum(1 for p in studies.iterdir() if p.is_dir())
        prepare_dataset(studies, run / "dataset", PrepareConfig(detector_channels=cfg.segmenter_channels,
                                                               segmenter_channels=cfg.segmenter_channels,
                                                               region=cfg.dataset_region, split=split_for(n)),
                    workers=1)  # the segmenter's images only
        max_slices = int(request.get("max_train_slices") or 0) or cfg.train_max_slices
        result = train_decoder(run / "dataset", run / "out", FinetuneConfig(
            base=cfg.segmenter_base, checkpoint=cfg.segmenter_checkpoint,
            epochs=int(request.get("max_epochs") or cfg.train_epochs), max_train_slices=max_slices,
            max_val_slices=max_slices, cache_dir=cfg.embedding_cache_dir, cache_max_mb=cfg.embedding_cache_gb * 1024,
            device=request.get("device") if request.get("device") not in (None, "cuda") else cfg.device,
            regions=cfg.regions if cfg.multi else None))
        publish(result["best_checkpoint"], cfg.decoder_path)
        _prepare_openvino(cfg)
        return {"published": str(cfg.decoder_path), "cases": n, "regions": list(cfg.regions),
                "best_val_dice": result.get("best_val_dice"),
                "zero_shot_val_dice": result.get("zero_shot_val_dice"), "skipped_labels": skipped}
