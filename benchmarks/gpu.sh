#!/usr/bin/env bash
# The GPU check, prepared to run as one short script on a CUDA machine (an H100/H200 slot, or your own GPU):
# names the card, runs the tests that have a CUDA path, then the encoder and decoder benchmarks on the GPU
# (PyTorch float32 vs bf16 autocast for the encoder; the decoder batched across slices vs one slice per call)
# and prints absolute times. Everything it writes goes to runs/benchmarks/ (and to $OUT when that is set).
#
#   benchmarks/gpu.sh [--case DIR]
#
# It needs the project's .venv (scripts/setup.sh) and the real case in ../shared/data, or --case DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
[ -x "$py" ] || ./scripts/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
"$py" -m pytest -q -x tests/test_gpu.py tests/test_segmenter.py
"$py" benchmarks/bench_encoder.py --device cuda "$@"
"$py" benchmarks/bench_decoder.py --device cuda "$@"
if [ -n "${OUT:-}" ]; then cp runs/benchmarks/bench_*_cuda.json "$OUT"/; fi
