#!/usr/bin/env bash
# Run the test suite (creates .venv on first use). Extra arguments go to pytest,
# e.g. ./run_tests.sh -m "not slow" for the fast unit tests only.
set -uo pipefail
cd "$(dirname "$0")"
./scripts/setup_env.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; that is a failure here, not a pass" >&2
  exit 1
fi
exit "$rc"
