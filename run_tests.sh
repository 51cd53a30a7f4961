#!/usr/bin/env bash
# Run the test suite (creates .venv on first use). Extra arguments go to pytest,
# e.g. ./run_tests.sh -m "not slow" for the fast unit tests only.
set -uo pipefail
cd "$(dirname "$0")"
./scripts/setup_env.sh || exit 1
# `resurface test`: pytest, where collecting no test (pytest's exit code 5) is a failure, not a pass
exec .venv/bin/python -m resurface.study.cli test "$@"
