#!/usr/bin/env bash
# Create .venv when missing and (re)install when pyproject/constraints change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDCONCEPT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.medconcept-install"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing medconcept and its dependencies (first time: several minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" setuptools wheel > "$VENV/install.log" 2>&1 || { tail -40 "$VENV/install.log"; exit 1; }
  "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]" >> "$VENV/install.log" 2>&1 || { tail -40 "$VENV/install.log"; exit 1; }
  # The PyPI package 'argparse' (pulled in via nnunetv2 -> batchgenerators -> unittest2)
  # shadows the standard library and breaks Prefect's server; unittest2 is never imported.
  "$VENV/bin/python" -m pip uninstall --quiet -y argparse >/dev/null 2>&1 || true
  echo "$WANT" > "$STAMP"
else
  echo "[setup] environment up to date ($VENV)"
fi
