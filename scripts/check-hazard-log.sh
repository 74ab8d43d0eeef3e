#!/usr/bin/env bash
# Every test the clinical safety hazard log (docs/clinical-safety.md) names as evidence must
# exist in CTest, and every hazard must name at least one: a control with no test that can
# fail is not evidence. usage: check-hazard-log.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
log=docs/clinical-safety.md
known=$(cd "$build" && ctest -N | sed -nE 's/^ *Test +#[0-9]+: +//p')
bad=0 hazards=0
while IFS= read -r hazard; do
  hazards=$((hazards + 1))
  # the evidence line(s) of this hazard: from its heading to the next
  names=$(awk -v h="$hazard" '$0 == h {on = 1; next} /^### / {on = 0} on' "$log" |
    grep -oE '`(unit|golden|service|conformance|mappings|bench)\.[A-Za-z0-9_.-]+`' | tr -d '`' | sort -u)
  if [ -z "$names" ]; then
    echo "$log: ${hazard#\#\#\# } names no test"
    bad=1
  fi
  for t in $names; do
    if ! grep -qxF -- "$t" <<<"$known"; then
      echo "$log: ${hazard#\#\#\# } names $t, which CTest in $build does not have"
      bad=1
    fi
  done
done < <(grep -E '^### H[0-9]+\.' "$log")
[ $bad = 0 ] && echo "hazard log: ok ($hazards hazards, every named test exists)"
exit $bad
