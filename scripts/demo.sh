#!/usr/bin/env bash
# The README's first command: set up .venv if needed, build the sample studies, prepare them, train a quick
# detector if none exists yet, and serve the MONAI Label app on http://127.0.0.1:8000 (Ctrl-C stops it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "${BRATSMEDSAM_VENV:-$root/.venv}/bin/python" main.py demo "$@"
