#!/usr/bin/env bash
# What conformance/ ships is itself valid and current:
#  - the generated files (R4 base definitions, their value sets, the profiles' snapshots)
#    are exactly what make_definitions.mjs makes from the pinned HL7 definitions;
#  - both CapabilityStatements pass the built-in validator;
#  - every CapabilityStatement, StructureDefinition and ValueSet passes @medplum/core and
#    HL7's JSON Schema. The one exception is documented in conformance/validators/README.md:
#    the schema is the R4 4.0.0 build, whose fhirVersion enum lacks "4.0.1", so an error on
#    fhirVersion alone is expected from it.
# usage: check_definitions.sh SPBRIDGE REPO
set -eu
spbridge=$1
repo=$2
here=$(dirname "$0")
status=0
node "$here/make_definitions.mjs" "$repo" --check || status=1
"$spbridge" validate "$repo"/conformance/capabilitystatement-*.json || status=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
node "$repo/conformance/validators/validate.mjs" --json "$repo"/conformance/capabilitystatement-*.json \
  "$repo"/conformance/profiles/*.json "$repo"/conformance/valuesets/*.json >"$out" || true
node -e '
const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
let bad = 0;
for (const r of d.results) {
  if (r.inputError) { console.log(`FAIL ${r.file}: ${r.inputError}`); bad++; continue; }
  for (const v of ["jsonschema", "medplum"]) {
    const errs = r.validators[v].errors.filter((e) => !(v === "jsonschema" && /\.fhirVersion$/.test(e.path) && /"4\.0\.1"/.test(e.message)));
    if (!r.validators[v].valid && errs.length > 0) { console.log(`FAIL ${v} ${r.file}: ${errs.slice(0, 3).map((e) => `${e.path}: ${e.message}`).join("; ")}`); bad++; }
  }
}
console.log(`shipped definitions: ${d.results.length} resources, ${bad} failing`);
process.exit(bad ? 1 : 0);
' "$out" || status=1
exit $status
