#!/usr/bin/env bash
# `spbridge mappings check` on deliberately broken copies of the shipped mapping set: each
# must fail (exit 5) naming the right file and line and saying what is wrong.
set -u
SPB=$1
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASSED=0 FAILED=0

# case NAME EXPECTED-FRAGMENT EDIT-COMMAND...: copy the set, break it, check it
case_() {
  local name=$1 want=$2; shift 2
  rm -rf "$WORK/m" && cp -r "$REPO/mappings" "$WORK/m"
  (cd "$WORK/m" && "$@")
  out=$("$SPB" mappings check "$WORK/m" 2>&1)
  rc=$?
  if [ $rc = 5 ] && grep -qF -- "$want" <<<"$out"; then
    PASSED=$((PASSED + 1)); echo "ok - $name"
  else
    FAILED=$((FAILED + 1)); echo "not ok - $name (exit $rc)"; echo "$out" | sed 's/^/    /' | head -5
  fi
}
line_of() { grep -n -m1 -- "$2" "$1" | cut -d: -f1; }

case_ "unknown key in a profile" "dialects/native.ini:$(( $(line_of "$REPO/mappings/dialects/native.ini" '^event.note') + 1 )): error: unknown field 'event.mood'" \
  sed -i '/^event.note/a event.mood = n:mood' dialects/native.ini
case_ "XPath that does not compile" "dialects/gp2gp.ini:$(line_of "$REPO/mappings/dialects/gp2gp.ini" '^event.note'): error: XPath for event.note does not compile" \
  sed -i 's#^event.note = hl7:text#event.note = hl7:text[#' dialects/gp2gp.ini
case_ "syntax error" "dialects/native.ini:$(( $(line_of "$REPO/mappings/dialects/native.ini" '^\[fields\]') + 1 )): error: syntax error" \
  sed -i '/^\[fields\]/a this line has no equals sign' dialects/native.ini
case_ "code system map value that is not a URI" "is not a URI" \
  sed -i 's#^2.16.840.1.113883.2.1.3.2.4.15 = http://snomed.info/sct#2.16.840.1.113883.2.1.3.2.4.15 = snomed#' dialects/gp2gp.ini
case_ "ConceptMap group source that is not a URI" "conceptmaps/needs.json" \
  sed -i '0,/"source": "http:\/\/snomed.info\/sct"/s//"source": "SNOMED CT"/' conceptmaps/needs.json
case_ "same code mapped to two meanings" "is mapped to two different meanings" \
  sed -i '0,/"code": "871711000000103"/s//"code": "871731000000106"/' conceptmaps/triggers.json
case_ "equivalence not allowed in R4" "is not an R4 value" \
  sed -i '0,/"equivalence": "wider"/s//"equivalence": "same-as"/' conceptmaps/triggers.json
case_ "R5 relationship instead of equivalence" "uses 'relationship' (FHIR R5)" \
  sed -i '0,/"equivalence": "wider"/s//"relationship": "source-is-narrower-than-target"/' conceptmaps/triggers.json
case_ "reverse coverage gap (a Task status with no decision)" "Task status 'on-hold' has neither a GP code" \
  bash -c 'jq "(.group[] | select(.source == \"http://hl7.org/fhir/task-status\") | .element) |= map(select(.code != \"on-hold\"))" conceptmaps/outcomes.json > x && mv x conceptmaps/outcomes.json'
case_ "not JSON, with its line" "conceptmaps/needs.json:3: error: not valid JSON" \
  sed -i '3s/.*/  "id" "oops",/' conceptmaps/needs.json
case_ "unknown section in the manifest" "mappings.ini" \
  sed -i '$a [extras]\nfoo = bar' mappings.ini
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
