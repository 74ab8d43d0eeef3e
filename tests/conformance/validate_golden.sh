#!/usr/bin/env bash
# Validates every resource the golden cases expect spbridge to print (Bundles, report
# Observations and OperationOutcomes) with HL7's FHIR R4 JSON Schema and @medplum/core.
set -eu
repo=$1
validators="$repo/conformance/validators"
if [ ! -d "$validators/node_modules" ]; then
  echo "FAIL: $validators/node_modules is missing; run 'npm ci' there (scripts/setup does)" >&2
  exit 1
fi
files=()
for f in "$repo"/tests/golden/*/expected.ndjson; do
  [ -s "$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || { echo "FAIL: no golden outputs found" >&2; exit 1; }
node "$validators/validate.mjs" --expect valid "${files[@]}"
