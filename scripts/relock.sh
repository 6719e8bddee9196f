#!/usr/bin/env bash
# Upgrade the tested set: re-resolve requirements.txt from the registries into a FRESH venv (the lock is not
# used), run the fast tests in it, and only when they pass rewrite requirements.lock from its `pip freeze`.
# Then review `git diff requirements.lock`, run ./scripts/setup.sh (the lock changed, so .venv is brought to
# the new versions) and the whole suite (./scripts/test.sh) before committing. Meant to run on a schedule
# (e.g. weekly) so an upstream release that breaks the stack (ultralytics internals, pydicom 3, numpy 2) is
# found here, not on a user's fresh install. Takes about 5-6 minutes and ~9 GB for the venv.
#   scripts/relock.sh [VENV_DIR]      (default: a new folder under ${TMPDIR:-/tmp})
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$(mktemp -d "${TMPDIR:-/tmp}/bratsmedsam-relock.XXXXXX")/venv}"
if [ -e "$venv/bin/python" ]; then
  echo "[relock] $venv already holds a venv: give a new folder so the resolve starts from nothing" >&2
  exit 2
fi
echo "[relock] resolving requirements.txt into $venv" >&2
python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
new="$(mktemp "${TMPDIR:-/tmp}/requirements.lock.XXXXXX")"
{
  sed -n '/^#/p' "$root/requirements.lock"   # keep the header comment
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -viE '^bratsmedsam=='
} > "$new"
echo "[relock] running the fast tests against the new set" >&2
(cd "$root" && BRATSMEDSAM_LOCK_FILE="$new" "$venv/bin/python" -m pytest -m "not slow" -q -x)
mv "$new" "$root/requirements.lock"
echo "[relock] requirements.lock rewritten; review: git diff requirements.lock" >&2
