"""Box-prompted MedSAM-family segmenter: LiteMedSAM (default), MedSAM ViT-B, SAM ViT-B.

``load_segmenter(...)`` -> :class:`Segmenter` (``segment``, ``segment_many``, ``embed``);
``train_decoder(dataset_dir, out_dir, FinetuneConfig(...))`` fine-tunes the mask decoder on cached embeddings.
Boxes are pixel XYXY (inclusive) in the slice frame; model frames stay inside :mod:`.families`.
"""

from .families import FAMILIES, get_family
from .finetune import FinetuneConfig, train_decoder
from .model import SegResult, Segmenter, load_segmenter

__all__ = ["FAMILIES", "FinetuneConfig", "SegResult", "Segmenter", "get_family", "load_segmenter", "train_decoder"]
