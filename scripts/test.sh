#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole test suite (slow tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "${BRATSMEDSAM_VENV:-$root/.venv}/bin/python" -m pytest "$@"
