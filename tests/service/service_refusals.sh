#!/usr/bin/env bash
# Refused clients and refused input: no certificate, another CA, an expired or revoked
# certificate, a valid certificate with no identity, practice A posting for practice B,
# wrong media type, bad XML, unmapped code, oversize body. Each is refused with the right
# status, audited, and nothing is queued.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer && write_config "$PEER_PORT" "$(printf '\n[spbridge]\n')" || exit 1
# a small body limit for the 413 case
sed -i 's/^spool_poll_ms = 200$/spool_poll_ms = 200\nmax_body_bytes = 4096/' "$WORK/spbridge.ini"
start_spb || exit 1
make_referral 1 "$WORK/r1.xml"

rows() { "$SPB" outbox --config "$WORK/spbridge.ini" list --json | jq length; }
tls_refused() { # CERT-NAME ('' for none): curl must fail without an HTTP answer
  local args=(-s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.pem")
  [ -n "$1" ] && args+=(--cert "$PKI/$1.pem" --key "$PKI/$1.key")
  [ "$(curl "${args[@]}" -H 'Content-Type: application/xml' --data-binary @"$WORK/r1.xml" \
    "https://localhost:$SPB_PORT/events")" = 000 ]
}
check "no client certificate: refused in the handshake" tls_refused ""
check "a certificate from another CA: refused" tls_refused foreign-B83002
check "an expired certificate: refused" tls_refused expired-B83002
check "a revoked certificate (CRL): refused" tls_refused revoked-B83002
check "a valid certificate with no configured identity: 403" [ "$(post "$WORK/r1.xml" peer)" = 403 ]
check "practice Y01234 posting a B83002 event: 403" [ "$(post "$WORK/r1.xml" practice-Y01234)" = 403 ]
check "  the answer is an OperationOutcome (security)" \
  jq -e '.resourceType == "OperationOutcome" and .issue[0].code == "security"' "$WORK/resp.json"
check "the auditor may not post events: 403" [ "$(post "$WORK/r1.xml" auditor-Y63)" = 403 ]
check "JSON instead of XML: 415" [ "$(post "$WORK/r1.xml" practice-B83002 application/json)" = 415 ]
printf '<event xmlns="urn:spbridge:native:1"><practice' >"$WORK/bad.xml"
check "truncated XML: 400" [ "$(post "$WORK/bad.xml")" = 400 ]
check "  with line and column" jq -e '.issue[0].diagnostics | test("^POST /events:1:[0-9]+: ")' "$WORK/resp.json"
sed 's/code="871731000000106"/code="123456789"/' "$WORK/r1.xml" >"$WORK/unmapped.xml"
check "unmapped code: 422" [ "$(post "$WORK/unmapped.xml")" = 422 ]
check "  naming the code and the ConceptMap" \
  jq -e '.issue[0].diagnostics | test("123456789.*triggers")' "$WORK/resp.json"
check "  parked for replay (its id is in the answer)" jq -e '.id | length == 36' "$WORK/resp.json"
sed 's/<nhsNumber>[0-9]*</<nhsNumber>9434765918</' "$WORK/r1.xml" >"$WORK/badnhs.xml"
check "invalid NHS number: 422" [ "$(post "$WORK/badnhs.xml")" = 422 ]
: >"$WORK/empty.xml"
check "an empty body: 400" [ "$(post "$WORK/empty.xml")" = 400 ]
check "  with no parked id (there is nothing to keep)" jq -e 'has("id") | not' "$WORK/resp.json"
head -c 6000 /dev/zero | tr '\0' ' ' >"$WORK/big.xml"
check "oversize body: 413" [ "$(post "$WORK/big.xml")" = 413 ]
check "nothing was queued by any of these" [ "$(rows)" = 0 ]
check "refused inputs are parked" [ "$("$SPB" outbox --config "$WORK/spbridge.ini" parked | jq length)" -ge 3 ]
sqlite3 "$WORK/var/spbridge.db" "SELECT step || ':' || result FROM audit" >"$WORK/audit.txt"
check "certificate refusals are audited" grep -q '^certificate_refused:refused' "$WORK/audit.txt"
check "the cross-practice post is audited" grep -q '^refused:forbidden' "$WORK/audit.txt"
check "the unmapped code is audited" grep -q '^refused:unmapped' "$WORK/audit.txt"
check "the empty body is audited" grep -q '^refused:empty' "$WORK/audit.txt"
check "a good referral is still accepted afterwards" [ "$(post "$WORK/r1.xml")" = 202 ]
check "  and delivered" wait_until 15 sr_is "$(event_uuid 1)" 1

# Cancellations act on an earlier referral: only for its patient, from its practice.
cancellation() { # REFERRAL-N NHS-N PRACTICE FILE
  cat >"$4" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<event xmlns="urn:spbridge:native:1" id="$(event_uuid $((900 + $1 + $2)))" kind="cancellation">
  <practice ods="$3"/>
  <recorded>2026-11-21T09:00:00+00:00</recorded>
  <patient><nhsNumber>$(nhs_number "$2")</nhsNumber></patient>
  <code system="http://snomed.info/sct" code="871731000000106"/>
  <cancels>$(event_uuid "$1")</cancels>
</event>
XML
}
before=$(rows)
cancellation 1 2 B83002 "$WORK/c-other-patient.xml"
check "a cancellation of referral 1 for another patient: 422" \
  [ "$(post "$WORK/c-other-patient.xml")" = 422 ]
check "  saying it is another patient (NHS number), naming the referral" \
  jq -e --arg r "$(event_uuid 1)" '.issue[0].diagnostics | test("another patient") and
    test("NHS number differs") and contains($r)' "$WORK/resp.json"
check "  without either NHS number in the answer" \
  bash -c "! grep -qE '$(nhs_number 1)|$(nhs_number 2)' '$WORK/resp.json'"
check "  parked for replay" jq -e '.id | length == 36' "$WORK/resp.json"
cancellation 77 1 B83002 "$WORK/c-unknown.xml"
check "a cancellation of a referral spbridge never received: 422" \
  [ "$(post "$WORK/c-unknown.xml")" = 422 ]
check "  saying so" jq -e '.issue[0].diagnostics | test("has not received")' "$WORK/resp.json"
cancellation 1 1 Y01234 "$WORK/c-other-practice.xml"
check "practice Y01234 cancelling B83002's referral: 403" \
  [ "$(post "$WORK/c-other-practice.xml" practice-Y01234)" = 403 ]
check "  naming the practice that sent it" \
  jq -e '.issue[0].diagnostics | test("practice B83002 sent")' "$WORK/resp.json"
check "none of them stored or queued anything" [ "$(rows)" = "$before" ]
sqlite3 "$WORK/var/spbridge.db" "SELECT step || ':' || result FROM audit" >"$WORK/audit.txt"
check "the wrong-patient and unknown-referral cancellations are audited" \
  [ "$(grep -c '^refused:wrong_link' "$WORK/audit.txt")" = 2 ]
sleep 1
check "the service's Task for referral 1 is still requested" \
  peer_task_status_is "$(event_uuid 1)" requested
cancellation 1 1 B83002 "$WORK/c-right.xml"
check "the cancellation for the right patient is accepted (202)" \
  [ "$(post "$WORK/c-right.xml")" = 202 ]
check "  and the Task is cancelled on the server" \
  wait_until 15 peer_task_status_is "$(event_uuid 1)" cancelled
stop_spb
finish
