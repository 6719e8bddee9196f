"""The three checkpoint families and the exact preprocessing each one's weights were trained with.

Every family maps a slice image uint8 ``(H, W, 3)`` to an encoder input float32 ``(3, S, S)``
(``S`` = 256 for LiteMedSAM, 1024 for the ViT-B families), pixel-XYXY boxes (inclusive, slice frame)
to the model frame (the ``S x S`` input grid), and the mask decoder's low-resolution logits
``(n, 1, 256, 256)`` back to the slice's own ``(H, W)`` grid.

- ``litemedsam``: resize the longest side to 256 (cv2 INTER_AREA), min-max to [0, 1] per image,
  zero-pad bottom/right to 256x256; boxes scaled by ``256 / max(H, W)``; logits cropped to the
  unpadded part, then resized (bilinear) to ``(H, W)``; mask = logit > 0.
- ``medsam`` (MedSAM ViT-B): resize to 1024x1024 (skimage, cubic, anti-aliased, back to uint8),
  min-max to [0, 1]; boxes scaled by ``1024 / W`` and ``1024 / H``; sigmoid, then resize to
  ``(H, W)``, mask = probability > 0.5.
- ``sam`` (SAM ViT-B): ``ResizeLongestSide(1024)``, SAM's pixel mean/std on 0-255, zero-pad to
  1024x1024; boxes scaled per axis by the resize; logits upsampled to 1024, cropped to the resized
  part, resized to ``(H, W)``; mask = logit > 0.

The longest-side frame and the unpad-and-resize of the logits are ``segment_anything``'s own
(``ResizeLongestSide.get_preprocess_shape``, ``Sam.postprocess_masks``). Box scaling stays
:func:`bratsmedsam.boxes.scale_xyxy` (float32): ``ResizeLongestSide.apply_boxes`` scales in float64 and
differs in the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("litemedsam", "medsam", "sam")
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
LOWRES = 256  # the mask decoder's output grid (4x the 64x64 embedding grid) for all three families


@dataclass(frozen=True)
class Frame:
    """Where a slice sits in the model input: original ``(H, W)`` and resized ``(h, w)`` (before padding)."""

    height: int
    width: int
    resized_h: int
    resized_w: int


def _longest_side_frame(height: int, width: int, target: int) -> Frame:
    """The frame of a slice whose longest side is resized to ``target`` (SAM's ``ResizeLongestSide`` rounding)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return Frame(height, width, *ResizeLongestSide.get_preprocess_shape(height, width, target))


def _unpad_and_resize(logits, input_size: int, frame: Frame):
    """``segment_anything``'s ``Sam.postprocess_masks``: logits upsampled to the ``input_size`` grid, the padding
    cropped off, resized (bilinear) to the slice. It reads only the input size from the model, given here."""
    from types import SimpleNamespace

    from segment_anything.modeling import Sam

    model = SimpleNamespace(image_encoder=SimpleNamespace(img_size=input_size))
    return Sam.postprocess_masks(model, logits, (frame.resized_h, frame.resized_w), (frame.height, frame.width))


def _check_image(image: np.ndarray) -> np.ndarray:
    from ..errors import UserError

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"segmenter input must be a uint8 (H, W, 3) slice image, got {image.dtype} {image.shape}")
    return image


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return (x - x.min()) / np.clip(x.max() - x.min(), 1e-8, None)


class Family:
    """One checkpoint family: its name, input size and pre/post-processing (no weights here)."""

    name: str
    input_size: int
    preprocess_id: str  # changes whenever the preprocessing changes (part of the embedding cache key)

    def frame(self, height: int, width: int) -> Frame:
        raise NotImplementedError

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        """uint8 ``(H, W, 3)`` -> float32 ``(3, S, S)`` encoder input and its :class:`Frame`."""
        raise NotImplementedError

    def scale(self, frame: Frame) -> tuple[float, float]:
        """``(sx, sy)``: model-frame coordinate = slice pixel coordinate * scale."""
        raise NotImplementedError

    def boxes_to_model(self, boxes_xyxy: np.ndarray, frame: Frame) -> np.ndarray:
        """Pixel XYXY (slice frame) -> XYXY in the ``S x S`` model input frame, float32 ``(n, 4)``."""
        from ..boxes import scale_xyxy

        sx, sy = self.scale(frame)
        return scale_xyxy(boxes_xyxy, sx, sy)

    def boxes_from_model(self, boxes_model: np.ndarray, frame: Frame) -> np.ndarray:
        """Inverse of :meth:`boxes_to_model`."""
        from ..boxes import scale_xyxy

        sx, sy = self.scale(frame)
        return scale_xyxy(boxes_model, 1.0 / sx, 1.0 / sy)

    def logits_to_original(self, logits, frame: Frame):
        """Decoder logits ``(n, 1, 256, 256)`` -> ``(n, 1, H, W)`` scores (differentiable, for the loss)."""
        raise NotImplementedError

    def masks(self, logits, frame: Frame) -> np.ndarray:
        """Decoder logits ``(n, 1, 256, 256)`` -> bool masks ``(n, H, W)`` at the slice's resolution."""
        return (self.logits_to_original(logits, frame) > 0).squeeze(1).cpu().numpy()


class LiteMedSAMFamily(Family):
    name = "litemedsam"
    input_size = 256
    preprocess_id = "lite256:cv2-area-longest:minmax:pad-br:v1"

    def frame(self, height, width):
        return _longest_side_frame(height, width, self.input_size)

    def preprocess(self, image):
        import cv2

        image = _check_image(image)
        fr = self.frame(*image.shape[:2])
        resized = cv2.resize(image, (fr.resized_w, fr.resized_h), interpolation=cv2.INTER_AREA)
        out = np.zeros((self.input_size, self.input_size, 3), np.float32)
        out[: fr.resized_h, : fr.resized_w] = _minmax(resized)
        return np.ascontiguousarray(out.transpose(2, 0, 1)), fr

    def scale(self, frame):
        s = self.input_size / max(frame.height, frame.width)
        return s, s

    def logits_to_original(self, logits, frame):
        # the decoder's 256 grid is the input grid here, so the upsampling step is the identity
        return _unpad_and_resize(logits, self.input_size, frame)


class MedSAMFamily(Family):
    name = "medsam"
    input_size = 1024
    preprocess_id = "medsam1024:skimage-cubic-aa-square:uint8:minmax:v1"

    def frame(self, height, width):
        return Frame(height, width, self.input_size, self.input_size)

    def preprocess(self, image):
        from skimage import transform

        image = _check_image(image)
        fr = self.frame(*image.shape[:2])
        resized = transform.resize(image, (self.input_size, self.input_size), order=3, preserve_range=True,
                                   anti_aliasing=True).astype(np.uint8)
        return np.ascontiguousarray(_minmax(resized).transpose(2, 0, 1)), fr

    def scale(self, frame):
        return self.input_size / frame.width, self.input_size / frame.height

    def logits_to_original(self, logits, frame):
        import torch.nn.functional as F

        return F.interpolate(logits, size=(frame.height, frame.width), mode="bilinear", align_corners=False)

    def masks(self, logits, frame):
        # MedSAM's own inference: sigmoid first, then resize the probabilities, then > 0.5.
        import torch
        import torch.nn.functional as F

        prob = F.interpolate(torch.sigmoid(logits.float()), size=(frame.height, frame.width), mode="bilinear",
                             align_corners=False)
        return (prob > 0.5).squeeze(1).cpu().numpy()


class SAMFamily(Family):
    name = "sam"
    input_size = 1024
    preprocess_id = "sam1024:resize-longest-pil:pixel-mean-std:pad-br:v1"

    def frame(self, height, width):
        return _longest_side_frame(height, width, self.input_size)

    def preprocess(self, image):
        from segment_anything.utils.transforms import ResizeLongestSide

        image = _check_image(image)
        fr = self.frame(*image.shape[:2])
        resized = ResizeLongestSide(self.input_size).apply_image(image).astype(np.float32)
        norm = (resized - np.array(SAM_PIXEL_MEAN, np.float32)) / np.array(SAM_PIXEL_STD, np.float32)
        out = np.zeros((self.input_size, self.input_size, 3), np.float32)
        out[: fr.resized_h, : fr.resized_w] = norm
        return np.ascontiguousarray(out.transpose(2, 0, 1)), fr

    def scale(self, frame):
        return frame.resized_w / frame.width, frame.resized_h / frame.height

    def logits_to_original(self, logits, frame):
        return _unpad_and_resize(logits, self.input_size, frame)


_REGISTRY = {f.name: f for f in (LiteMedSAMFamily(), MedSAMFamily(), SAMFamily())}


def get_family(name: str) -> Family:
    from ..errors import UserError

    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown segmenter family {name!r}: expected one of {', '.join(FAMILIES)}") from None
