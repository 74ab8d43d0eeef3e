#!/bin/bash
# Self-test of the test peer with curl and openssl only (plus node for JSON):
# throwaway PKI, mTLS refusals, spbridge golden Bundles (referral, replay,
# cancellation), every fault mode, search, validation, rollback, state file,
# clean shutdown. Needs `npm ci` in this folder first.
# usage: tests/peer/selftest.sh            (prints PASS/FAIL lines and "N passed, N failed")
set -u
here=$(cd "$(dirname "$0")" && pwd)
golden=$(cd "$here/../golden" && pwd)
work=$(mktemp -d /tmp/spbridge-peer-selftest.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
ko() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { # description, then a command; PASS if it exits 0
    local d=$1; shift
    if "$@"; then ok "$d"; else ko "$d"; fi
}
# js EXPR FILE: evaluate EXPR with b = parsed JSON of FILE, print the result
js() { node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const r=('"$1"');process.stdout.write(typeof r==="string"?r:JSON.stringify(r))' "$2"; }

"$here/gen-certs.sh" "$work/pki" >/dev/null || { echo "FAIL: gen-certs"; exit 1; }
cd "$work/pki"

start_peer() {
    rm -f "$work/port"
    node "$here/server.mjs" --port 0 --cert server.pem --key server.key --ca ca.pem \
        --port-file "$work/port" --state-file "$work/state.json" >>"$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do [ -s "$work/port" ] && break; sleep 0.05; done
    port=$(cat "$work/port" 2>/dev/null)
    B=https://127.0.0.1:$port/fhir
    A=https://127.0.0.1:$port/_admin
}
stop_peer() { kill -TERM "$pid"; wait "$pid"; local rc=$?; pid=; return $rc; }

start_peer
check "peer writes its port to --port-file" test -n "$port"

C=(curl -sS --cert client.pem --key client.key --cacert ca.pem)
FJ=(-H 'Content-Type: application/fhir+json')
post() { "${C[@]}" "${FJ[@]}" -o "$work/$1" -w '%{http_code}' --data-binary @"$2" "$B"; }
stats() { "${C[@]}" "$A/stats" -o "$work/stats.json"; }
sr_id='urn:uuid:5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10'

# ---- mutual TLS
code=$(curl -sS --cacert ca.pem -o /dev/null -w '%{http_code}' "$B/metadata" 2>/dev/null)
check "client without a certificate is refused (TLS 1.3)" test "$code" = 000
code=$(curl -sS --tls-max 1.2 --cacert ca.pem -o /dev/null -w '%{http_code}' "$B/metadata" 2>/dev/null)
check "client without a certificate is refused (TLS 1.2)" test "$code" = 000
code=$(curl -sS --cert other-client.pem --key other-client.key --cacert ca.pem -o /dev/null -w '%{http_code}' "$B/metadata" 2>/dev/null)
check "client certificate from another CA is refused" test "$code" = 000
code=$(curl -sS --cert client.pem --key client.key --cacert ca.pem --tlsv1.1 --tls-max 1.1 -o /dev/null -w '%{http_code}' "$B/metadata" 2>/dev/null)
check "TLS 1.1 is refused" test "$code" = 000
code=$("${C[@]}" -o /dev/null -w '%{http_code}' "https://localhost:$port/fhir/metadata")
check "client cert from the CA is accepted; server cert valid for localhost" test "$code" = 200

# ---- referral transaction, replay, cancellation
head -n 1 "$golden/native-referral/expected.ndjson" >"$work/ref.json"
head -n 1 "$golden/native-cancellation/expected.ndjson" >"$work/cancel.json"
code=$(post r1.json "$work/ref.json")
check "referral transaction -> 200" test "$code" = 200
check "response is a transaction-response with 6 x 201 and Type/id/_history/vid locations" \
    test "$(js 'b.type+" "+b.entry.map(e=>e.response.status+(/^[A-Za-z]+\/[^/]+\/_history\/[^/]+$/.test(e.response.location)?"":"!")).join(",")' "$work/r1.json")" = \
    "transaction-response 201,201,201,201,201,201"
code=$(post r2.json "$work/ref.json")
check "same Bundle again -> 200, conditional creates all 200 (nothing new)" \
    test "$code $(js 'b.entry.map(e=>e.response.status).join(",")' "$work/r2.json")" = "200 200,200,200,200,200,200"
check "replay points at the same resources" \
    test "$(js 'b.entry.map(e=>e.response.location.split("/_history")[0]).join()' "$work/r1.json")" = \
         "$(js 'b.entry.map(e=>e.response.location.split("/_history")[0]).join()' "$work/r2.json")"
stats
check "stats: 1 ServiceRequest, 1 Task, 1 Patient for the identifiers" \
    test "$(js "[b.serviceRequestsByIdentifier['$sr_id'],b.tasksByIdentifier['$sr_id'],b.patientsByIdentifier['9434765919']].join()" "$work/stats.json")" = "1,1,1"
code=$(post c1.json "$work/cancel.json")
check "cancellation transaction (conditional PUT by identifier) -> 200" test "$code" = 200
"${C[@]}" -o "$work/sr.json" "$B/ServiceRequest?identifier=urn:ietf:rfc:3986|$sr_id"
"${C[@]}" -o "$work/task.json" "$B/Task?identifier=urn:ietf:rfc:3986|$sr_id"
check "ServiceRequest is revoked (still exactly one)" test "$(js 'b.total+" "+b.entry[0].resource.status' "$work/sr.json")" = "1 revoked"
check "Task is cancelled (still exactly one)" test "$(js 'b.total+" "+b.entry[0].resource.status' "$work/task.json")" = "1 cancelled"

# ---- search
# (the cancellation Bundle's Task.requester is the practice Organization; the
# referral's was the PractitionerRole: the conditional PUT replaced it)
org=$("${C[@]}" "$B/Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|B83002" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).entry[0].resource.id))')
since=$(date -u -d '-10 minutes' +%Y-%m-%dT%H:%M:%S%%2B00:00)
"${C[@]}" -o "$work/poll.json" "$B/Task?requester=Organization/$org&_lastUpdated=gt$since"
check "poll Task?requester=...&_lastUpdated=gt... finds the Task" test "$(js 'b.total' "$work/poll.json")" = 1
later=$(date -u -d '+10 minutes' +%Y-%m-%dT%H:%M:%SZ)
"${C[@]}" -o "$work/poll2.json" "$B/Task?requester=Organization/$org&_lastUpdated=gt$later"
check "poll with a later _lastUpdated finds nothing" test "$(js 'b.total' "$work/poll2.json")" = 0
for i in 1 2 3; do
    "${C[@]}" "${FJ[@]}" -o /dev/null -d "{\"resourceType\":\"Task\",\"status\":\"requested\",\"intent\":\"order\",\"identifier\":[{\"system\":\"urn:selftest\",\"value\":\"t$i\"}]}" "$B/Task"
done
"${C[@]}" -o "$work/p1.json" "$B/Task?identifier=urn:selftest|&_count=2"
next=$(js '(b.link.find(l=>l.relation==="next")||{}).url||""' "$work/p1.json")
"${C[@]}" -o "$work/p2.json" "$next"
check "_count=2 paging: 2 entries, next link, then 1 entry and no next" \
    test "$(js 'b.entry.length' "$work/p1.json") $(js 'b.entry.length+" "+b.link.some(l=>l.relation==="next")' "$work/p2.json")" = "2 1 false"
code=$("${C[@]}" -o "$work/unk.json" -w '%{http_code}' "$B/Task?requestor=x")
check "unknown search parameter -> 400 OperationOutcome" test "$code $(js 'b.resourceType' "$work/unk.json")" = "400 OperationOutcome"

# ---- validation and rollback
code=$("${C[@]}" "${FJ[@]}" -o "$work/inv.json" -w '%{http_code}' -d '{"resourceType":"Task","status":"canceled","intent":"order"}' "$B/Task")
check "invalid Task.status (required binding) -> 400 OperationOutcome" test "$code $(js 'b.resourceType' "$work/inv.json")" = "400 OperationOutcome"
cat >"$work/txbad.json" <<'EOF'
{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009"}},
 {"resource":{"resourceType":"Task","intent":"order","for":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"}},"request":{"method":"POST","url":"Task"}}]}
EOF
code=$(post txbad.out "$work/txbad.json")
"${C[@]}" -o "$work/pat.json" "$B/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009"
check "transaction with an invalid entry -> 400 and nothing of it is kept" test "$code $(js 'b.total' "$work/pat.json")" = "400 0"

# ---- faults
"${C[@]}" -o /dev/null -X POST $A/faults -d '{"mode":"status","status":503,"count":2,"retryAfter":2}'
h1=$("${C[@]}" "${FJ[@]}" -D - -o "$work/f1.json" --data-binary @"$work/ref.json" "$B" | tr -d '\r' | grep -i '^retry-after:')
code1=$(js 'b.resourceType' "$work/f1.json")
code2=$(post f2.json "$work/ref.json")
code3=$(post f3.json "$work/ref.json")
check "status fault: 503 + Retry-After: 2 + OperationOutcome, twice, then 200" \
    test "$h1|$code1|$code2|$code3" = "Retry-After: 2|OperationOutcome|503|200"
"${C[@]}" -o /dev/null -X POST $A/faults -d '{"mode":"hang","count":1}'
t0=$(date +%s)
"${C[@]}" "${FJ[@]}" -m 2 -o /dev/null --data-binary @"$work/ref.json" "$B" 2>/dev/null; rc=$?
code=$("${C[@]}" -o /dev/null -w '%{http_code}' "$B/metadata")
check "hang fault: client times out (curl 28) after its own 2 s, next request served" test "$rc $((($(date +%s) - t0) >= 2)) $code" = "28 1 200"
"${C[@]}" -o /dev/null -X POST $A/faults -d '{"mode":"close","count":1}'
"${C[@]}" "${FJ[@]}" -o /dev/null --data-binary @"$work/ref.json" "$B" 2>/dev/null; rc=$?
check "close fault: connection dropped without a response (curl 52/56)" test "$rc" = 52 -o "$rc" = 56
"${C[@]}" -o /dev/null -X POST $A/reset
"${C[@]}" -o /dev/null -X POST $A/faults -d '{"mode":"drop-response","count":1}'
"${C[@]}" "${FJ[@]}" -o /dev/null --data-binary @"$work/ref.json" "$B" 2>/dev/null; rc=$?
code=$(post d2.json "$work/ref.json")
stats
check "drop-response fault: applied but unanswered; the retry creates nothing new" \
    test "$rc $code $(js 'b.entry.map(e=>e.response.status).join()' "$work/d2.json") $(js "b.serviceRequestsByIdentifier['$sr_id']" "$work/stats.json")" = \
    "52 200 200,200,200,200,200,200 1"
check "stats count requests per status and applied faults" \
    test "$(js 'b.requestsByStatus["200"]+" "+b.faultsApplied["drop-response"]' "$work/stats.json")" = "1 1"

# ---- state file, clean shutdown, restart
stop_peer; rc=$?
check "SIGTERM: clean exit 0" test "$rc" = 0
start_peer
stats
check "--state-file: repository survives a restart" test "$(js "b.serviceRequestsByIdentifier['$sr_id']" "$work/stats.json")" = 1
check "log has one line per request with method, path, status and client CN" \
    grep -q ' POST /fhir 200 cn=spbridge-test-client ' "$work/log"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
