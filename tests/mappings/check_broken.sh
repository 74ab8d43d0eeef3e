#!/usr/bin/env bash
# `spbridge mappings check` on deliberately broken copies of the shipped mapping set: each
# must fail (exit 5) naming the right file and line and saying what is wrong. Expected
# lines are computed from the files, so the cases survive edits to the shipped set; an
# edit that no longer applies (the text it changes has gone) fails loudly.
set -u
SPB=$1
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASSED=0 FAILED=0
M=$REPO/mappings

# case_ NAME EXPECTED EDIT-COMMAND...: copy the set, break it, check it. EXPECTED is the
# fragment the output must hold ("FILE:LINE: error: MESSAGE..."), or "fn:NAME" to have the
# function NAME print it, run in the broken copy (for edits that move lines).
case_() {
  local name=$1 want=$2 out rc; shift 2
  rm -rf "$WORK/m" && mkdir "$WORK/m" && cp -r "$M/." "$WORK/m/" # a copy, even of a link
  (cd "$WORK/m" && "$@")
  if diff -rq "$M" "$WORK/m" >/dev/null; then
    FAILED=$((FAILED + 1)); echo "not ok - $name (the edit changed nothing)"; return
  fi
  case $want in fn:*) want=$(cd "$WORK/m" && "${want#fn:}") ;; esac
  out=$("$SPB" mappings check "$WORK/m" 2>&1)
  rc=$?
  if [ $rc = 5 ] && grep -qF -- "$WORK/m/$want" <<<"$out"; then
    PASSED=$((PASSED + 1)); echo "ok - $name"
  else
    FAILED=$((FAILED + 1)); echo "not ok - $name (exit $rc)"; echo "    want: $want"
    echo "$out" | sed 's/^/    /' | head -5
  fi
}
line_of() { grep -n -m1 -- "$2" "$1" | cut -d: -f1; }
after() { echo $(( $(line_of "$1" "$2") + 1 )); }
lines() { wc -l <"$1"; }
NATIVE=$M/dialects/native.ini GP2GP=$M/dialects/gp2gp.ini MANIFEST=$M/mappings.ini
TRIGGERS=$M/conceptmaps/triggers.json NEEDS=$M/conceptmaps/needs.json

echo "# dialect profiles"
case_ "unknown key in a profile" "dialects/native.ini:$(after "$NATIVE" '^event.note'): error: unknown field 'event.mood'" \
  sed -i '/^event.note/a event.mood = n:mood' dialects/native.ini
case_ "XPath that does not compile" "dialects/native.ini:$(line_of "$NATIVE" '^event.priority'): error: XPath for event.priority does not compile" \
  sed -i 's#^event.priority = n:priority$#event.priority = n:priority[#' dialects/native.ini
case_ "syntax error" "dialects/native.ini:$(after "$NATIVE" '^\[fields\]'): error: syntax error" \
  sed -i '/^\[fields\]/a this line has no equals sign' dialects/native.ini
case_ "a [dialect] key given twice (events)" "dialects/native.ini:$(after "$NATIVE" '^events = '): error: [dialect] events is given twice (first on line $(line_of "$NATIVE" '^events = '))" \
  sed -i '/^events = /a events = /n:referral' dialects/native.ini
case_ "a [dialect] key given twice (name)" "dialects/native.ini:$(after "$NATIVE" '^name = '): error: [dialect] name is given twice" \
  sed -i '/^name = /a name = native' dialects/native.ini
case_ "schema.ROOT repeated with the same ROOT" "dialects/gp2gp.ini:$(after "$GP2GP" '^schema.RCMR_IN030000UK06 ='): error: schema.RCMR_IN030000UK06 is never used: the schema for that ROOT on line $(line_of "$GP2GP" '^schema.RCMR_IN030000UK06 =')" \
  sed -i '/^schema.RCMR_IN030000UK06 =/a schema.RCMR_IN030000UK06 = $schema_dir/other.xsd' dialects/gp2gp.ini
case_ "schema.ROOT after a plain schema" "dialects/native.ini:$(after "$NATIVE" '^schema = '): error: schema.event is never used: the plain schema on line $(line_of "$NATIVE" '^schema = ')" \
  sed -i '/^schema = /a schema.event = $schema_dir/event.xsd' dialects/native.ini
case_ "schema with no path" "dialects/native.ini:$(line_of "$NATIVE" '^schema = '): error: schema has no path" \
  sed -i 's#^schema = .*#schema =#' dialects/native.ini
case_ "required key with an empty value (events =)" "dialects/native.ini:$(line_of "$NATIVE" '^events = '): error: events has no expression" \
  sed -i 's#^events = .*#events =#' dialects/native.ini
case_ "field with an empty expression" "dialects/native.ini:$(line_of "$NATIVE" '^event.note = '): error: event.note has no expression" \
  sed -i 's#^event.note = .*#event.note =#' dialects/native.ini
case_ "undeclared namespace prefix" "dialects/native.ini:$(line_of "$NATIVE" '^event.note = '): error: XPath for event.note: namespace prefix 'hl8' is not declared in [namespaces]" \
  sed -i 's#^event.note = n:note$#event.note = hl8:note#' dialects/native.ini
case_ "undeclared prefix inside a predicate" "dialects/gp2gp.ini:$(line_of "$GP2GP" '^event.note = '): error: XPath for event.note: namespace prefix 'hl8' is not declared" \
  sed -i 's#^event.note = hl7:text$#event.note = hl7:text[hl8:x]#' dialects/gp2gp.ini
case_ "undefined variable" "dialects/native.ini:$(line_of "$NATIVE" '^event.note = '): error: XPath for event.note: variable \$nobody is not defined" \
  sed -i 's#^event.note = n:note$#event.note = n:note[@by = $nobody]#' dialects/native.ini
case_ "unknown XPath function" "dialects/native.ini:$(line_of "$NATIVE" '^event.note = '): error: XPath for event.note: unknown function lower-case()" \
  sed -i 's#^event.note = n:note$#event.note = n:note[lower-case(.) != ""]#' dialects/native.ini
case_ "code system map value that is not a URI, at its own line" "dialects/gp2gp.ini:$(line_of "$GP2GP" '^2.16.840.1.113883.2.1.6.2 = '): error: map.codesystem gives 'readv2' for '2.16.840.1.113883.2.1.6.2', which is not a URI" \
  sed -i 's#^2.16.840.1.113883.2.1.6.2 = http://read.info/readv2#2.16.840.1.113883.2.1.6.2 = readv2#' dialects/gp2gp.ini
case_ "map fallback that is not a URI, at its own line" "dialects/gp2gp.ini:$(line_of "$GP2GP" '^\* = urn:oid:'): error: map.codesystem's '*' fallback 'oid' is not a URI" \
  sed -i 's#^\* = urn:oid:{}#* = oid#' dialects/gp2gp.ini
case_ "map key given twice" "dialects/gp2gp.ini:$(after "$GP2GP" '^2.16.840.1.113883.2.1.6.2 = '): error: map.codesystem lists '2.16.840.1.113883.2.1.6.2' twice (first on line $(line_of "$GP2GP" '^2.16.840.1.113883.2.1.6.2 = '))" \
  sed -i '/^2.16.840.1.113883.2.1.6.2 = /a 2.16.840.1.113883.2.1.6.2 = http://read.info/ctv3' dialects/gp2gp.ini
case_ "namespace prefix bound to an empty URI" "dialects/native.ini:$(line_of "$NATIVE" '^n = urn:spbridge:native:1'): error: namespace prefix 'n' has an empty URI" \
  sed -i 's#^n = urn:spbridge:native:1$#n =#' dialects/native.ini
case_ "transform for a field with no expression" "dialects/native.ini:$(after "$NATIVE" '^event.id = uuid'): error: [transforms] recipient.ods has no expression in [fields]" \
  sed -i '/^event.id = uuid/a recipient.ods = upper' dialects/native.ini

echo "# ConceptMaps"
case_ "ConceptMap group source that is not a URI" "conceptmaps/needs.json:$(line_of "$NEEDS" '"source": "http://snomed.info/sct"'): error: group 1: source must be the code system URI" \
  sed -i '0,/"source": "http:\/\/snomed.info\/sct"/s//"source": "SNOMED CT"/' conceptmaps/needs.json
emptied() {
  echo "conceptmaps/triggers.json:$(( $(line_of conceptmaps/triggers.json '"source": "http://read.info/ctv3"') + 2 )): error: group 3 (source http://read.info/ctv3) has no element"
}
case_ "ConceptMap group with an emptied element list" fn:emptied \
  bash -c 'jq --indent 2 "(.group[] | select(.source == \"http://read.info/ctv3\") | .element) |= []" conceptmaps/triggers.json > x && mv x conceptmaps/triggers.json'
no_group() { echo "conceptmaps/needs.json:$(line_of conceptmaps/needs.json '"group"'): error: ConceptMap has no group"; }
case_ "ConceptMap with no group" fn:no_group \
  bash -c 'jq --indent 2 ".group = []" conceptmaps/needs.json > x && mv x conceptmaps/needs.json'
case_ "same code mapped to two meanings" "conceptmaps/triggers.json:$(line_of "$TRIGGERS" '"code": "871711000000103"'): error: http://snomed.info/sct|871731000000106 is mapped to two different meanings: 'declined' here and 'referral'" \
  sed -i '0,/"code": "871711000000103"/s//"code": "871731000000106"/' conceptmaps/triggers.json
case_ "equivalence not allowed in R4" "conceptmaps/triggers.json:$(line_of "$TRIGGERS" '"code": "871731000000106"'): error: element 871731000000106: equivalence 'same-as' is not an R4 value" \
  sed -i '0,/"equivalence": "wider"/s//"equivalence": "same-as"/' conceptmaps/triggers.json
case_ "R5 relationship instead of equivalence" "conceptmaps/triggers.json:$(line_of "$TRIGGERS" '"code": "871731000000106"'): error: element 871731000000106 uses 'relationship' (FHIR R5)" \
  sed -i '0,/"equivalence": "wider"/s//"relationship": "source-is-narrower-than-target"/' conceptmaps/triggers.json
case_ "not JSON, with its line" "conceptmaps/needs.json:3: error: not valid JSON" \
  sed -i '3s/.*/  "id" "oops",/' conceptmaps/needs.json
case_ "not a ConceptMap" "conceptmaps/needs.json:$(line_of "$NEEDS" '"resourceType"'): error: resourceType is \"ValueSet\"" \
  sed -i '0,/"resourceType": "ConceptMap"/s//"resourceType": "ValueSet"/' conceptmaps/needs.json
gap() {
  echo "conceptmaps/outcomes.json:$(( $(line_of conceptmaps/outcomes.json '"source": "http://hl7.org/fhir/task-status"') - 1 )): error: outcomes: Task status 'on-hold' has neither a GP code nor an explicit \"do not write back\" (an element with equivalence unmatched) in this group (the file is named at $WORK/m/mappings.ini:$(line_of mappings.ini '^outcomes = '))"
}
case_ "reverse coverage gap (a Task status with no decision)" fn:gap \
  bash -c 'jq --indent 2 "(.group[] | select(.source == \"http://hl7.org/fhir/task-status\") | .element) |= map(select(.code != \"on-hold\"))" conceptmaps/outcomes.json > x && mv x conceptmaps/outcomes.json'
case_ "reverse coverage with no task-status group" "mappings.ini:$(line_of "$MANIFEST" '^outcomes = '): error: outcomes: no ConceptMap named here has a group with source http://hl7.org/fhir/task-status" \
  bash -c 'jq --indent 2 "del(.group[] | select(.source == \"http://hl7.org/fhir/task-status\"))" conceptmaps/outcomes.json > x && mv x conceptmaps/outcomes.json'
same_url() {
  echo "conceptmaps/local.json:$(line_of conceptmaps/local.json '"url"'): error: ConceptMap url https://spbridge.dev/fhir/ConceptMap/spbridge-triggers is also the url of $WORK/m/conceptmaps/triggers.json (line $(line_of conceptmaps/triggers.json '"url"'))"
}
case_ "a copied ConceptMap that kept its url" fn:same_url \
  bash -c 'jq --indent 2 ".group |= map(.source |= . + \"-local\")" conceptmaps/triggers.json > conceptmaps/local.json && sed -i "s#^triggers = .*#& conceptmaps/local.json#" mappings.ini'

echo "# the manifest"
case_ "unknown section in the manifest" "mappings.ini:$(( $(lines "$MANIFEST") + 2 )): error: unknown section [extras]" \
  sed -i '$a [extras]\nfoo = bar\nbaz = 2' mappings.ini
case_ "a [set] key given twice" "mappings.ini:$(after "$MANIFEST" '^name = '): error: [set] name is given twice (first on line $(line_of "$MANIFEST" '^name = '))" \
  sed -i '/^name = /a name = spbridge-other' mappings.ini
case_ "a dialect listed twice" "mappings.ini:$(after "$MANIFEST" '^native = '): error: dialect 'native' is listed twice (first on line $(line_of "$MANIFEST" '^native = '))" \
  sed -i '/^native = /a native = dialects/native.ini' mappings.ini
case_ "one profile named for two dialects" "mappings.ini:$(line_of "$MANIFEST" '^native = '): error: dialects/gp2gp.ini is already named on line $(line_of "$MANIFEST" '^gp2gp = ')" \
  sed -i 's#^native = .*#native = dialects/gp2gp.ini#' mappings.ini
case_ "one ConceptMap named twice" "mappings.ini:$(line_of "$MANIFEST" '^needs = '): error: ./conceptmaps/needs.json is already named on line $(line_of "$MANIFEST" '^needs = ') (as needs)" \
  sed -i 's#^needs = .*#& ./conceptmaps/needs.json#' mappings.ini
case_ "a ConceptMap file that does not exist" "mappings.ini:$(line_of "$MANIFEST" '^needs = '): error: role 'needs' names conceptmaps/neds.json, which does not exist" \
  sed -i 's#^needs = .*#needs = conceptmaps/neds.json#' mappings.ini
case_ "a dialect file that does not exist" "mappings.ini:$(line_of "$MANIFEST" '^native = '): error: dialect 'native' names dialects/Native.ini, which does not exist" \
  sed -i 's#^native = .*#native = dialects/Native.ini#' mappings.ini
case_ "a dialect with no accept listed before others" "mappings.ini:$(line_of "$MANIFEST" '^gp2gp = '): error: dialect 'gp2gp' has no accept, so it takes every document" \
  sed -i '/^accept = /,/^events = /{/^events = /!d}' dialects/gp2gp.ini
case_ "a role with no file" "mappings.ini:$(line_of "$MANIFEST" '^needs = '): error: 'needs' names no ConceptMap file" \
  sed -i 's#^needs = .*#needs =#' mappings.ini
case_ "an indented key in the manifest" "mappings.ini:$(after "$MANIFEST" '^gp2gp = '): error: an indented line continues 'gp2gp'" \
  sed -i '/^gp2gp = /a \ \ extra = dialects/native.ini' mappings.ini
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
