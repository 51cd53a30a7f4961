#!/usr/bin/env bash
# The workshop bundle, end to end, as a participant's laptop would use it (issue 21): the bundle's own copy of
# the project installs from the bundle's wheels and runs the profile from the bundle's cache, in a network
# namespace with only loopback up and with npm hidden. Prints the install and run times.
#
#   .venv/bin/resurface bundle /path/to/bundle --profile workshop --with-cache   # after a run of the profile
#   scripts/workshop_offline_check.sh /path/to/bundle [/scratch/folder] [profile]
#
# Linux only (unshare); run as a user that may create user namespaces. Not part of the test suite: the bundle is
# about 800 MB and the install takes minutes (the suite tests the bundle's parts: tests/test_cli.py, test_setup.py).
set -euo pipefail
B=$(cd "$1" && pwd)
WORK=${2:-$(mktemp -d)}
PROFILE=${3:-workshop}
NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")  # npm's own folder, hidden below
EMPTY=$(mktemp -d)
rm -rf "$WORK/laptop" && mkdir -p "$WORK/laptop"
unshare -rnm sh -c "
set -e
ip link set lo up
mount --bind '$EMPTY' '$NPM_DIR'
cd '$WORK/laptop'
export PIP_NO_INDEX=1 PIP_FIND_LINKS='$B/wheels' RESURFACE_PACKAGES='$B/npm' RESURFACE_CACHE='$B/cache'
if command -v npm >/dev/null; then echo 'npm is still visible'; exit 9; fi
if python3 -c 'import socket; socket.create_connection((\"pypi.org\", 443), timeout=5)' 2>/dev/null; then
  echo 'the network is still up'; exit 9
fi
s0=\$(date +%s)
tar xzf '$B/resurface.tar.gz' && cd resurface
bash scripts/setup_env.sh
s1=\$(date +%s)
./run_all.sh --profile '$PROFILE'
s2=\$(date +%s)
echo \"offline: unpack + install \$((s1 - s0)) s, run of '$PROFILE' \$((s2 - s1)) s; built:\" \
  \$(grep -c ' building ' outputs/'$PROFILE'/run.log || true) \"artifact(s)\"
"
