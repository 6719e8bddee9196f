"""Which modalities a served model was trained on, and the stacks to serve: ``serve``, ``segment`` and the app's
``PUT /model`` refuse a model trained on other channels than the ones stacked for it (it would see images it never
saw). Decoders record their channels in their metadata, detectors in their ``.pt`` (``detection.weights``). The
detector and the segmenter each have their own stack (``intensity.Stacks``)."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .intensity import Stacks, parse_channels


def model_channels(detector: Path | None, decoder: Path | None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{"detector" | "segmenter": (what, channels)}`` for the given models that record their channels (a decoder's
    metadata, a detector's ``bratsmedsam_channels``); ``what`` names the file for messages."""
    from .detection.weights import stored_channels
    from .segmenter.checkpoint import load_decoder

    out = {}
    if decoder is not None and decoder.is_file():
        got = load_decoder(decoder)["meta"].get("channels")
        if got:
            out["segmenter"] = (f"decoder {decoder}", tuple(got))
    if detector is not None and detector.is_file():
        got = stored_channels(detector)
        if got:
            out["detector"] = (f"detector {detector}", got)
    return out


def resolve_channels(model: str, given: str | None, recorded: dict) -> tuple[str, str, str]:
    """The stack to serve ``model`` ("detector" or "segmenter") on: ``given``, else the one the model records, else
    the model's default. A model trained on another stack than ``given`` would see images it never saw: UserError."""
    what, got = recorded.get(model, (None, None))
    chosen = parse_channels(given) if given else (got or getattr(Stacks(), model))  # Stacks(): the defaults
    if got is not None and tuple(got) != tuple(chosen):
        flag = f"--{model}-channels"
        raise UserError(f"{what} was trained on channels {','.join(got)}, not {','.join(chosen)}: run with "
                        f"{flag} {','.join(got)} (or give a {model} trained on {','.join(chosen)})")
    return tuple(chosen)


def resolve_stacks(detector_given: str | None, segmenter_given: str | None, detector: Path | None,
                   decoder: Path | None) -> Stacks:
    """Both models' stacks (:func:`resolve_channels` for each, from the models at ``detector`` / ``decoder``)."""
    recorded = model_channels(detector, decoder)
    return Stacks(resolve_channels("detector", detector_given, recorded),
                  resolve_channels("segmenter", segmenter_given, recorded))
