"""Which modalities a served model was trained on, and the stack to serve: ``serve``, ``segment`` and the app's
``PUT /model`` refuse a model trained on other channels than the ones stacked for it (it would see images it never
saw). Decoders record their channels in their metadata, detectors in their ``.pt`` (``detection.weights``)."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .intensity import DEFAULT_CHANNELS, parse_channels


def model_channels(detector: Path | None, decoder: Path | None) -> dict[str, tuple[str, ...]]:
    """``{model: channels}`` of the served models that record them (a decoder's metadata, a detector's
    ``bratsmedsam_channels``)."""
    from .detection.weights import stored_channels
    from .segmenter.checkpoint import load_decoder

    out = {}
    if decoder is not None and decoder.is_file():
        got = load_decoder(decoder)["meta"].get("channels")
        if got:
            out[f"decoder {decoder}"] = tuple(got)
    if detector is not None and detector.is_file():
        got = stored_channels(detector)
        if got:
            out[f"detector {detector}"] = got
    return out


def resolve_channels(given: str | None, recorded: dict[str, tuple[str, ...]]) -> str:
    """The channels to serve: ``given`` (``--channels``), else the ones the models record, else the default. A model
    trained on other channels than the served ones would see images it never saw: UserError."""
    stacks = set(recorded.values())
    if len(stacks) > 1:
        raise UserError("the served models were trained on different channels: " +
                        "; ".join(f"{m}: {','.join(c)}" for m, c in recorded.items()))
    chosen = parse_channels(given) if given else (stacks.pop() if stacks else DEFAULT_CHANNELS)
    for m, c in recorded.items():
        if tuple(c) != tuple(chosen):
            raise UserError(f"{m} was trained on channels {','.join(c)}, not {','.join(chosen)}: run with "
                            f"--channels {','.join(c)} (or give models trained on {','.join(chosen)})")
    return ",".join(chosen)
