#!/usr/bin/env bash
# Create .venv inside the checkout (once) and install requirements.txt into it.
# Re-runs are cheap: a stamp keyed on requirements.txt says the venv is current.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $venv (first time: about 5-6 minutes, ~9 GB)" >&2
python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
echo "$want" > "$stamp"
echo "[setup] done" >&2
