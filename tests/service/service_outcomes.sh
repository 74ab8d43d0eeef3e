#!/usr/bin/env bash
# Outcomes back: the service (played here through the real FHIR peer's API) moves Tasks
# through accepted -> in-progress -> completed with a wellbeing score output, through
# rejected with a reason, and changes a Task's patient. spbridge follows each Task (polling
# for one service, rest-hook notifications for another), writes every outcome back once to
# the practice's spool folder with the mapped GP codes and the exact values, closes the
# ServiceRequest when the Task ends, quarantines the wrong patient, and repeats nothing
# across a restart. A GP cancellation reaches the server.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer || exit 1
mkdir -p "$WORK/writeback-B83002" "$WORK/writeback-Y01234"
write_config "$PEER_PORT" "
[service.notified]
name = Moorside Link Workers
ods = X26SP2
endpoint = https://127.0.0.1:$PEER_PORT/fhir
poll_interval_s = 0

[practice.Y01234]
service = notified
region = Y63
writeback_format = native
writeback_spool_dir = $WORK/writeback-Y01234

[client.moorside-service]
role = service
ods = X26SP2
san = urn:ods:X26SP1
"
# the first service is polled every second and writes back to B83002's folder
sed -i "0,/^endpoint = /s#^endpoint = .*#&\npoll_interval_s = 1#; 0,/^spool_dir = /s#^spool_dir = #writeback_spool_dir = $WORK/writeback-B83002\n&#" "$WORK/spbridge.ini"
start_spb || exit 1

fhir() { # METHOD PATH [BODY-FILE] -> body on stdout (as the service)
  local args=(-s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem"
    --key "$PKI/spbridge-client.key" -H 'Content-Type: application/fhir+json' -X "$1")
  [ $# -gt 2 ] && args+=(--data-binary @"$3")
  curl "${args[@]}" "https://127.0.0.1:$PEER_PORT/fhir/$2"
}
task_of() { fhir GET "Task?identifier=urn:ietf:rfc:3986%7Curn:uuid:$1" | jq '.entry[0].resource'; }
set_task() { # REFERRAL JQ-FILTER [ARGS...]: the service updates its Task
  local ref=$1 filter=$2; shift 2
  task_of "$ref" | jq "$@" "$filter | del(.meta)" >"$WORK/task.json"
  fhir PUT "Task/$(jq -r .id "$WORK/task.json")" "$WORK/task.json" >/dev/null
}
wb_files() { ls "$1" 2>/dev/null | grep -c "spbridge-outcome-$2" || true; }
wb_count_is() { [ "$(wb_files "$1" "$2")" = "$3" ]; }
sr_status_is() {
  fhir GET "ServiceRequest?identifier=urn:ietf:rfc:3986%7Curn:uuid:$1" |
    jq -e --arg s "$2" '.entry[0].resource.status == $s' >/dev/null
}
referral_state_is() { # REFERRAL STATUS (as spbridge recorded it)
  "$SPB" referrals --config "$WORK/spbridge.ini" show "$1" 2>/dev/null |
    jq -e --arg s "$2" '.state[0].task_status == $s' >/dev/null
}

for n in 1 2 3; do make_referral $n "$WORK/r$n.xml"; post "$WORK/r$n.xml" >/dev/null; done
R1=$(event_uuid 1) R2=$(event_uuid 2) R3=$(event_uuid 3)
for r in $R1 $R2 $R3; do check "referral ${r:0:8} delivered" wait_until 20 sr_is "$r" 1; done

# 1. accepted -> in-progress -> completed with a WEMWBS score output (decimal kept exact)
set_task "$R1" '.status = "accepted"'
check "accepted is followed" wait_until 15 referral_state_is "$R1" accepted
set_task "$R1" '.status = "in-progress"'
check "in-progress is followed" wait_until 15 referral_state_is "$R1" in-progress
PATIENT=$(task_of "$R1" | jq -r '.for.reference')
cat >"$WORK/obs.json" <<JSON
{"resourceType":"Observation","status":"final",
 "code":{"coding":[{"system":"http://snomed.info/sct","code":"718426000",
   "display":"Warwick-Edinburgh Mental Well-being Scale score"}]},
 "subject":{"reference":"$PATIENT"},"effectiveDateTime":"2026-11-20T10:00:00Z",
 "valueQuantity":{"value":52.3,"unit":"score","system":"http://unitsofmeasure.org","code":"{score}"}}
JSON
OBS=$(fhir POST Observation "$WORK/obs.json" | jq -r .id)
set_task "$R1" '.status = "completed" | .output = [{"type":{"text":"wellbeing"},"valueReference":{"reference":("Observation/" + $obs)}}]' --arg obs "$OBS"
check "completed with an output: one write-back document" wait_until 15 wb_count_is "$WORK/writeback-B83002" "$R1" 1
DOC=$(ls "$WORK/writeback-B83002"/spbridge-outcome-$R1-*.xml | head -1)
check "  it is GP2GP XML that parses" xmllint --noout "$DOC"
check "  with the WEMWBS code" grep -q 'code="718426000"' "$DOC"
check "  and the value exactly as sent (52.3, not 52.299999...)" grep -q 'value="52.3"' "$DOC"
check "  for the right patient" grep -q "extension=\"$(nhs_number 1)\"" "$DOC"
check "  that spbridge's own gp2gp dialect reads (round trip)" \
  bash -c "'$SPB' translate --dialect gp2gp '$DOC' 2>&1 | grep -q 'event=no_events'"
check "the ServiceRequest is closed as completed" wait_until 15 sr_status_is "$R1" completed

# 2. rejected with a reason and the business status 'declined' -> 871711000000103
set_task "$R2" '.status = "rejected" | .statusReason = {"text":"Patient declined when contacted"} | .businessStatus = {"coding":[{"system":"https://spbridge.dev/fhir/CodeSystem/business-status","code":"declined"}]}'
check "rejected/declined: one write-back document" wait_until 15 wb_count_is "$WORK/writeback-B83002" "$R2" 1
DOC2=$(ls "$WORK/writeback-B83002"/spbridge-outcome-$R2-*.xml | head -1)
check "  coded 871711000000103 (social prescribing declined)" grep -q 'code="871711000000103"' "$DOC2"
check "  with the reason" grep -q 'Patient declined when contacted' "$DOC2"
check "the ServiceRequest is revoked" wait_until 15 sr_status_is "$R2" revoked

# 3. the wrong patient: quarantined, never written
cat >"$WORK/other-patient.json" <<JSON
{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"$(nhs_number 99)"}]}
JSON
OTHER=$(fhir POST Patient "$WORK/other-patient.json" | jq -r .id)
set_task "$R3" '.status = "accepted" | .for = {"reference":("Patient/" + $p)} | .businessStatus = {"coding":[{"system":"https://spbridge.dev/fhir/CodeSystem/business-status","code":"declined"}]}' --arg p "$OTHER"
check "a Task naming another patient is quarantined" wait_until 15 bash -c \
  "'$SPB' referrals --config '$WORK/spbridge.ini' show $R3 | jq -e '.quarantine | length == 1' >/dev/null"
sleep 2
check "  and nothing is written back for it" wb_count_is "$WORK/writeback-B83002" "$R3" 0
check "  the alert is logged" grep -q 'event=writeback_quarantined' "$WORK/serve.log"

# 4. a restart in the middle repeats nothing
kill9_spb
set_task "$R1" '.note = [{"text":"follow-up call done"}]'
start_spb || exit 1
sleep 4
check "after a restart: still one document for each" bash -c \
  "[ \$(ls '$WORK/writeback-B83002' | grep -c $R1) = 1 ] && [ \$(ls '$WORK/writeback-B83002' | grep -c $R2) = 1 ]"

# 5. notifications (rest-hook) for the second service, native write-back format
make_referral 4 "$WORK/r4.xml"
sed -i 's/ods="B83002"/ods="Y01234"/' "$WORK/r4.xml"
R4=$(event_uuid 4)
check "a Y01234 referral is accepted" [ "$(post "$WORK/r4.xml" practice-Y01234)" = 202 ]
check "  and delivered" wait_until 20 sr_is "$R4" 1
sleep 1
set_task "$R4" '.status = "rejected" | .businessStatus = {"coding":[{"system":"https://spbridge.dev/fhir/CodeSystem/business-status","code":"did-not-attend"}]}'
sleep 2
check "without a notification nothing happens (polling is off)" wb_count_is "$WORK/writeback-Y01234" "$R4" 0
TASK4=$(task_of "$R4" | jq -r .id)
printf '{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"https://127.0.0.1:%s/fhir/Task/%s"}]}' "$PEER_PORT" "$TASK4" >"$WORK/notify.json"
check "a notification from the service is accepted (200)" [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.pem" --cert "$PKI/service.pem" --key "$PKI/service.key" -H 'Content-Type: application/fhir+json' --data-binary @"$WORK/notify.json" "https://localhost:$SPB_PORT/fhir/notify")" = 200 ]
check "  and the outcome is written back (native format)" wait_until 15 wb_count_is "$WORK/writeback-Y01234" "$R4" 1
check "  coded did-not-attend (281399006)" grep -q 'code="281399006"' "$WORK/writeback-Y01234"/spbridge-outcome-$R4-*.xml
check "a practice may not send notifications (403)" [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.pem" --cert "$PKI/practice-B83002.pem" --key "$PKI/practice-B83002.key" -H 'Content-Type: application/fhir+json' --data-binary @"$WORK/notify.json" "https://localhost:$SPB_PORT/fhir/notify")" = 403 ]

# 6. a GP cancellation of a known referral reaches the server
make_referral 5 "$WORK/r5.xml"
R5=$(event_uuid 5)
post "$WORK/r5.xml" >/dev/null
wait_until 20 sr_is "$R5" 1
sed -e 's/kind="referral"/kind="cancellation"/' -e "s/id=\"$R5\"/id=\"$(event_uuid 55)\"/" \
  -e "s#<consent>true</consent>#<cancels>$R5</cancels>#" "$WORK/r5.xml" >"$WORK/c5.xml"
check "the GP's cancellation is accepted" [ "$(post "$WORK/c5.xml")" = 202 ]
check "  the Task is cancelled on the server" wait_until 15 peer_task_status_is "$R5" cancelled
check "  the ServiceRequest is revoked" wait_until 15 sr_status_is "$R5" revoked

check "referrals show tells the whole story" bash -c \
  "'$SPB' referrals --config '$WORK/spbridge.ini' show $R1 | jq -e '(.taskVersions | length) >= 3 and ([.deliveries[] | select(.kind == \"writeback\")] | length == 1)' >/dev/null"
stop_spb
finish
