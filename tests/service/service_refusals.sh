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
head -c 6000 /dev/zero | tr '\0' ' ' >"$WORK/big.xml"
check "oversize body: 413" [ "$(post "$WORK/big.xml")" = 413 ]
check "nothing was queued by any of these" [ "$(rows)" = 0 ]
check "refused inputs are parked" [ "$("$SPB" outbox --config "$WORK/spbridge.ini" parked | jq length)" -ge 3 ]
sqlite3 "$WORK/var/spbridge.db" "SELECT step || ':' || result FROM audit" >"$WORK/audit.txt"
check "certificate refusals are audited" grep -q '^certificate_refused:refused' "$WORK/audit.txt"
check "the cross-practice post is audited" grep -q '^refused:forbidden' "$WORK/audit.txt"
check "the unmapped code is audited" grep -q '^refused:unmapped' "$WORK/audit.txt"
check "a good referral is still accepted afterwards" [ "$(post "$WORK/r1.xml")" = 202 ]
check "  and delivered" wait_until 15 sr_is "$(event_uuid 1)" 1
stop_spb
finish
