#!/usr/bin/env bash
# Run the whole study for one profile: every notebook in order, through Papermill.
#   ./run_all.sh                 # the default (offline, CPU) profile
#   ./run_all.sh --profile smoke # any params/NAME.yaml
#   ./run_all.sh --set sampling.temperatures=[0.5] --set transfer.seeds=[0]   # dotted-key overrides
# Creates .venv on first use. Executed notebooks land in outputs/<profile>/.
set -euo pipefail
cd "$(dirname "$0")"
profile=default
only=""
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --only) only="${2:?--only needs a notebook name prefix}"; shift 2 ;;
    --set) sets+=("${2:?--set needs key=value}"); shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (use --profile NAME)" >&2; exit 2 ;;
  esac
done

./scripts/setup_env.sh
py=.venv/bin/python

# Validate before any compute: one sentence and a non-zero exit on a bad profile, nothing written.
"$py" -m resurface.config "$profile" "${sets[@]}" >/dev/null
overrides=$("$py" -m resurface.config --overrides-yaml "$profile" "${sets[@]}")

out="${RESURFACE_OUTPUTS:-outputs}/$profile"
mkdir -p "$out"
start=$(date +%s)
nbdir=${RESURFACE_NOTEBOOKS:-notebooks}  # another folder of numbered notebooks, if given
for nb in "$nbdir"/[0-9][0-9]_*.ipynb; do
  name=$(basename "$nb")
  [ -n "$only" ] && [[ "$name" != "$only"* ]] && continue
  echo "==> $name (profile: $profile)"
  t0=$(date +%s)
  if ! "$py" -m papermill "$nb" "$out/$name" -p profile "$profile" -y "$overrides" -k resurface \
        --cwd "$nbdir" --progress-bar --log-level WARNING 2> >(tee "$out/.papermill.log" >&2); then
    cell=$(grep -oE "Cell In\[[0-9]+\]|cell [0-9]+|Exception encountered at \"In \[[0-9]+\]\"" "$out/.papermill.log" | tail -1)
    echo "run_all.sh: notebook $name failed${cell:+ at $cell}; the executed copy with the error is $out/$name" >&2
    exit 1
  fi
  echo "    done in $(( $(date +%s) - t0 )) s"
done
rm -f "$out/.papermill.log"
[ -z "$only" ] && RESURFACE_OUTPUTS="${RESURFACE_OUTPUTS:-outputs}" "$py" -m resurface.report --profile "$profile" >/dev/null \
  && echo "Report: $out/REPORT.md"
echo "Study '$profile' finished in $(( $(date +%s) - start )) s; results in $out/"
