#!/usr/bin/env bash
# Every resource the golden cases expect spbridge to print must also pass spbridge's own
# checks: the built-in validator (`spbridge validate`: base R4 plus spbridge's profiles) and
# @medplum/core run against spbridge's profiles (validate_profiles.mjs). HL7's JSON Schema
# and medplum on base R4 are run on the same files by validate_golden.sh.
# usage: validate_golden_profiles.sh SPBRIDGE REPO
set -eu
spbridge=$1
repo=$2
files=()
for f in "$repo"/tests/golden/*/expected.ndjson; do
  [ -s "$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || { echo "FAIL: no golden outputs found" >&2; exit 1; }
status=0
"$spbridge" validate "${files[@]}" || status=1
node "$(dirname "$0")/validate_profiles.mjs" "$repo" "${files[@]}" || status=1
[ $status = 0 ] && echo "golden outputs: all pass the built-in validator and medplum on spbridge's profiles"
exit $status
