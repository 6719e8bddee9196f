"""Image-encoder backends: the same encoder weights run by PyTorch or by OpenVINO on the CPU.

The encoder is nearly all of the segmenter's cost on a CPU (LiteMedSAM: ~75 GFLOPs per slice, the mask decoder
~0.1 s). PyTorch's eager float32 uses neither bf16 nor the CPU's best kernels; OpenVINO converts the same module
(``openvino.convert_model``, no ONNX file) and runs it with what the CPU offers: bf16 where the CPU has
AVX-512-BF16 or AMX (``precision="auto"``), else float32. ``precision="f32"`` asks for float32 everywhere.

The converted model (IR) is cached on disk, keyed by the family, the weights' SHA-256 and the input size
(conversion takes ~20 s on a 2-core CPU; reading the cached IR well under a second), written atomically. The
compiled model is NOT cached: OpenVINO's own ``CACHE_DIR`` writes its blob in place, two processes compiling at
once (a server and its training run) left a corrupt blob that crashed every later process with a segmentation
fault on load, and compiling takes under a second (0.84 s bf16 vs 0.45 s from the cache, AMX CPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "openvino", "torch")
PRECISIONS = ("auto", "f32", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it is not readable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_capable(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class TorchEncoder:
    """The module itself, on its device."""

    def __init__(self, module, device):
        self.module, self.device = module, device
        self.name = f"torch-{device.type}-f32"

    def __call__(self, x):
        import torch

        with torch.inference_mode():
            return self.module(x.to(self.device)).float().cpu()


class OpenVinoEncoder:
    """The module converted by OpenVINO and compiled for this CPU. Thread-safe: one infer request per call."""

    def __init__(self, module, input_size: int, cache_dir: str | os.PathLike, key: str, precision: str = "auto"):
        import openvino as ov
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"encoder precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.precision = ("bf16" if bf16_capable() else "f32") if precision == "auto" else precision
        core = ov.Core()
        model = _read_or_convert(ov, core, cache_dir, key, "the image encoder", lambda: ov.convert_model(
            module.eval(), example_input=torch.zeros(1, 3, input_size, input_size)))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.precision})
        self.name = f"openvino-cpu-{self.precision}"

    def __call__(self, x):
        import torch

        request = self.compiled.create_infer_request()
        out = request.infer([x.detach().cpu().numpy()])
        return torch.from_numpy(next(iter(out.values())).copy()).float()


class OpenVinoDecoder:
    """The box-prompted mask decoder (``model.decode_batched`` with one embedding per prompt) converted by OpenVINO,
    float32 (equal to PyTorch to ~1e-5). PyTorch's eager decoder is ~70 ms a prompt on a 2-core CPU and slows several
    times when other work shares the cores; OpenVINO's is a fraction of that (bench_decoder.py). It serves only
    while the PyTorch decoder's weights are the ones converted (their version counters unchanged): a decoder being
    fine-tuned, or reloaded in place, falls back to PyTorch (:meth:`current`)."""

    def __init__(self, module, params, cache_dir: str | os.PathLike, key: str):
        import openvino as ov
        import torch

        core = ov.Core()
        example = (torch.zeros(1, 256, 64, 64), torch.tensor([[8.0, 8.0, 64.0, 64.0]]))
        model = _read_or_convert(ov, core, cache_dir, key, "the mask decoder", lambda: ov.convert_model(
            module.eval(), example_input=example,
            input=[ov.PartialShape([-1, 256, 64, 64]), ov.PartialShape([-1, 4])]))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.params = list(params)
        self.versions = [p._version for p in self.params]
        self.name = "openvino-cpu-f32"

    def current(self) -> bool:
        return [p._version for p in self.params] == self.versions

    def __call__(self, embeddings, boxes_model):
        """``embeddings`` ``(n, 256, 64, 64)`` (one per prompt), ``boxes_model`` ``(n, 4)`` -> ``(logits (n, 1, 256,
        256), iou (n, 1))`` as float32 cpu tensors."""
        import torch

        out = list(self.compiled.create_infer_request().infer(
            [embeddings.detach().cpu().numpy(), boxes_model.detach().cpu().numpy()]).values())
        return torch.from_numpy(out[0].copy()), torch.from_numpy(out[1].copy())


def make_decoder(module, params, device, key: str, backend: str = "auto",
                 cache_dir: str | os.PathLike | None = None) -> OpenVinoDecoder | None:
    """The OpenVINO decoder on a CPU when it loads (``backend`` ``auto``/``openvino``), else None (PyTorch)."""
    if device.type != "cpu" or backend not in ("auto", "openvino") or not openvino_available():
        return None
    try:
        return OpenVinoDecoder(module, params, _ir_cache_dir(cache_dir), key)
    except Exception as exc:  # a runtime that cannot take this model: PyTorch still can
        logger.warning(f"OpenVINO unavailable for the mask decoder ({exc}); using PyTorch")
        return None


def _ir_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """Where converted models live: ``cache_dir``, else ``$BRATSMEDSAM_OPENVINO_CACHE``, else runs/.cache/openvino."""
    from ..offline import PROJECT_ROOT

    default = PROJECT_ROOT / "runs" / ".cache" / "openvino"
    return Path(cache_dir or os.environ.get("BRATSMEDSAM_OPENVINO_CACHE") or default)


def _read_or_convert(ov, core, cache_dir: str | os.PathLike, key: str, what: str, convert):
    """The IR ``<cache_dir>/<key>.xml`` if a complete one is there, else ``convert()`` saved there atomically."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    xml = cache_dir / f"{key}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return core.read_model(str(xml))
    logger.info(f"converting {what} for OpenVINO (once per weights)")
    model = convert()
    _save_atomically(ov, model, xml)
    return model


def _save_atomically(ov, model, xml: Path) -> None:
    """IR = .xml + .bin: both written under temporary names, then renamed (the .xml last: it marks completion)."""
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(tmp, xml)


def make_encoder(module, device, input_size: int, key: str, backend: str = "auto", precision: str = "auto",
                 cache_dir: str | os.PathLike | None = None):
    """The encoder to run: OpenVINO on a CPU when it loads (``backend="auto"``), PyTorch otherwise and on GPUs."""
    from ..errors import UserError

    if backend not in BACKENDS:
        raise UserError(f"encoder backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    use_ov = device.type == "cpu" and backend in ("auto", "openvino")
    if use_ov and not openvino_available():
        if backend == "openvino":
            raise UserError("encoder backend 'openvino' asked for, but the openvino package does not import")
        use_ov = False
    if not use_ov:
        return TorchEncoder(module, device)
    try:
        return OpenVinoEncoder(module, input_size, _ir_cache_dir(cache_dir), key, precision)
    except Exception as exc:  # a runtime that cannot take this model or CPU: PyTorch still can
        if backend == "openvino":
            raise UserError(f"OpenVINO could not compile the image encoder: {exc}") from None
        logger.warning(f"OpenVINO unavailable for the encoder ({exc}); using PyTorch")
        return TorchEncoder(module, device)
