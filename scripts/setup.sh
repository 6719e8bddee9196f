#!/usr/bin/env bash
# Create .venv inside the checkout (once) and install requirements.txt into it at the versions pinned by
# requirements.lock (the tested set). Re-runs are cheap: a stamp keyed on BOTH files says the venv is current.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BRATSMEDSAM_VENV:-$root/.venv}"
stamp="$venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/requirements.lock" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $venv (first time: about 5-6 minutes, ~9 GB)" >&2
python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt" -c "$root/requirements.lock"
echo "$want" > "$stamp"
echo "[setup] done" >&2
