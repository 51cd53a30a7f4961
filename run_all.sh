#!/usr/bin/env bash
# Run the whole study for one profile: every notebook in order, through Papermill.
#   ./run_all.sh                 # the default (offline, CPU) profile
#   ./run_all.sh --profile smoke # any params/NAME.yaml
#   ./run_all.sh --set sampling.temperatures=[0.5] --set transfer.seeds=[0]   # dotted-key overrides
#   ./run_all.sh --only 01       # one notebook (earlier steps come from the cache)
# Creates .venv on first use. Executed notebooks land in outputs/<profile>/.
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0"; exit 0 ;; esac
./scripts/setup_env.sh
# validation, the notebooks and the report, in one process (lib/resurface/study/runner.py)
exec .venv/bin/python -m resurface.study.cli run "$@"
