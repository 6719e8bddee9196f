"""The served networks, loaded once and reloaded when their published file changes (checked on every request).

Shared by the task configs (``lib/configs/``): the pipeline and the uncertainty scoring use both networks."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from bratsmedsam.errors import UserError

from .configs.settings import AppSettings

logger = logging.getLogger(__name__)


def _stamp(path: Path):
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        return None


class ModelStore:
    """Loads the segmenter (base + published decoder, if any) and the detector lazily; a changed
    file (``os.replace`` by a trainer) is picked up by the next request. A file that fails to load
    leaves the task unavailable (``error`` says why) instead of serving random weights."""

    def __init__(self, cfg: AppSettings):
        self.cfg = cfg
        self._lock = threading.RLock()
        self._seg, self._seg_stamp, self.seg_error = None, "unset", None
        self._det, self._det_stamp, self.det_error = None, "unset", None

    def segmenter(self):
        from bratsmedsam.segmenter import load_segmenter

        with self._lock:
            stamp = _stamp(self.cfg.decoder_path)
            if stamp != self._seg_stamp:
                old = self._seg
                try:
                    seg = load_segmenter(self.cfg.segmenter_base, self.cfg.segmenter_checkpoint,
                                         decoder=self.cfg.decoder_path if stamp else None, device=self.cfg.device,
                                         cache_dir=self.cfg.embedding_cache_dir, backend=self.cfg.encoder_backend,
                                         precision=self.cfg.encoder_precision,
                                         cache_max_mb=self.cfg.embedding_cache_gb * 1024,
                                         regions=self.cfg.regions if self.cfg.multi else None)
                    if old is not None and old.encoder_id == seg.encoder_id:
                        seg.cache = old.cache  # same encoder: embeddings stay valid across decoder updates
                    self._seg, self.seg_error = seg, None
                    logger.info(f"segmenter loaded: {seg.model_id}")
                except (UserError, OSError, RuntimeError) as exc:
                    self._seg, self.seg_error = None, str(exc)
                    logger.error(f"segmenter unavailable: {exc}")
                self._seg_stamp = stamp
            if self._seg is None:
                raise UserError(f"the segmenter is not available: {self.seg_error}")
            return self._seg

    def detector(self):
        with self._lock:
            stamp = _stamp(self.cfg.detector_path)
            if stamp != self._det_stamp:
                self._det, self.det_error = None, "no detector weights at " + str(self.cfg.detector_path)
                if stamp:
                    try:
                        from bratsmedsam.detector import Detector

                        self._det, self.det_error = Detector(self.cfg.detector_path, device=self.cfg.device), None
                        logger.info(f"detector loaded: {self._det.weights_id}")
                    except Exception as exc:  # ultralytics raises many kinds on a bad file
                        self.det_error = f"{self.cfg.detector_path}: {exc}"
                        logger.error(f"detector unavailable: {self.det_error}")
                self._det_stamp = stamp
            if self._det is None:
                raise UserError(f"the detector is not available: {self.det_error}")
            return self._det

    def has_segmenter(self) -> bool:
        try:
            self.segmenter()
            return True
        except UserError:
            return False

    def has_detector(self) -> bool:
        try:
            self.detector()
            return True
        except UserError:
            return False
