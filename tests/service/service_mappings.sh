#!/usr/bin/env bash
# Mappings as configuration, live: an event with a code no ConceptMap knows is refused (422)
# and parked with the code, its system and the map to extend; replaying it before the fix
# changes nothing; extending the ConceptMap on disk is picked up by the running service
# (no restart, no SIGHUP), after which the parked event replays and is delivered. A broken
# change is refused and the old set stays in force. Every translated message records the
# mapping set's version.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer && write_config "$PEER_PORT" || exit 1
cp -r "$REPO/mappings" "$WORK/mappings"
sed -i "s#^mappings_dir = .*#mappings_dir = $WORK/mappings\nwatch_mappings_ms = 300#" "$WORK/spbridge.ini"
start_spb || exit 1
CM=$WORK/mappings/conceptmaps/triggers.json

make_referral 1 "$WORK/r1.xml"
sed -i 's#<code system="http://snomed.info/sct" code="871731000000106"/>#<code system="https://example.org/local-codes" code="SP-REF" display="Local social prescribing referral"/>#' "$WORK/r1.xml"
check "an unmapped local code is refused (422)" [ "$(post "$WORK/r1.xml")" = 422 ]
PARKED=$(jq -r .id "$WORK/resp.json")
check "  and parked (its id is in the answer)" [ "${#PARKED}" = 36 ]
"$SPB" outbox --config "$WORK/spbridge.ini" parked >"$WORK/parked.json"
check "outbox parked names the code, its system and the ConceptMap to extend" jq -e \
  '.[0].message | test("SP-REF") and test("https://example.org/local-codes")' "$WORK/parked.json"
check "  and the fix" jq -e '.[0].hint | test("triggers.json")' "$WORK/parked.json"
"$SPB" outbox --config "$WORK/spbridge.ini" replay-parked "$PARKED" >/dev/null 2>&1
check "replaying before the fix changes nothing (exit 4)" [ $? = 4 ]

# extend the triggers ConceptMap on disk: a new group for the local code system
jq '.group += [{"source":"https://example.org/local-codes",
  "target":"https://spbridge.dev/fhir/CodeSystem/event-kind",
  "element":[{"code":"SP-REF","display":"Local social prescribing referral",
    "target":[{"code":"referral","equivalence":"wider","product":[{
      "property":"http://hl7.org/fhir/StructureDefinition/ServiceRequest#ServiceRequest.code",
      "system":"http://snomed.info/sct","value":"871731000000106",
      "display":"Referral to social prescribing service"}]}]}]}]' "$CM" >"$WORK/cm.json"
check "the extended mapping set passes check" "$SPB" mappings check "$WORK/mappings"
cp "$WORK/cm.json" "$CM"
check "the running service reloads it by itself" wait_until 10 grep -q 'event=reloaded' "$WORK/serve.log"
check "the parked event replays" "$SPB" outbox --config "$WORK/spbridge.ini" replay-parked "$PARKED"
check "  and is delivered, coded with the SNOMED concept" wait_until 20 sr_is "$(event_uuid 1)" 1
check "a second replay is refused" bash -c "! '$SPB' outbox --config '$WORK/spbridge.ini' replay-parked $PARKED >/dev/null 2>&1"

# a broken change is refused; the old set stays
cp "$CM" "$WORK/good.json"
echo '{"resourceType": "ConceptMap",' >"$CM"
check "a broken change is refused" wait_until 10 grep -q 'event=reload_refused' "$WORK/serve.log"
make_referral 2 "$WORK/r2.xml"
check "  and the old set still translates (202)" [ "$(post "$WORK/r2.xml")" = 202 ]
cp "$WORK/good.json" "$CM"
sqlite3 "$WORK/var/spbridge.db" "SELECT step || ':' || result FROM audit WHERE step = 'reload'" >"$WORK/reloads.txt"
check "reloads are audited (accepted and refused)" bash -c "grep -q 'reload:ok' '$WORK/reloads.txt' && grep -q 'reload:refused' '$WORK/reloads.txt'"
check "every translated message records the mapping set's version" bash -c \
  "[ \"\$(sqlite3 '$WORK/var/spbridge.db' \"SELECT COUNT(*) FROM events WHERE mapping_version NOT LIKE '%sha256:%'\")\" = 0 ]"
stop_spb
finish
