#!/usr/bin/env bash
# Audit for NHS regions: flows for two practices in two regions (B83002 in Y63, Y01234 in
# Y62) go through spbridge and the real FHIR peer: referrals delivered, one after a 500, one
# dead-lettered by a 422, a declined and a signposting event, Tasks accepted, completed and
# rejected by the service. Then: the Y63 auditor's certificate sees none of Y62's records
# (FHIR search, paging, NDJSON export, report, dashboard), and the other way round; asking for
# another region is 403 and audited; the report's figures match the flows sent, over HTTPS and
# from the CLI; after a stop the chain and every signed checkpoint verify; an edited, a
# deleted, a re-ordered and a truncated record are each found and named; pruning keeps the
# chain verifiable.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer || exit 1

# an auditor for a second region, signed by the development CA
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/auditor-Y62.key" \
  -subj "/O=NHS/OU=Y62/CN=NHS Midlands auditor" -out "$WORK/y62.csr" 2>/dev/null
printf 'subjectAltName=URI:urn:nhs-region:Y62\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n' >"$WORK/y62.ext"
openssl x509 -req -in "$WORK/y62.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -set_serial 6201 \
  -days 30 -extfile "$WORK/y62.ext" -out "$PKI/auditor-Y62.pem" 2>/dev/null

# the shipped mappings plus a local signposting code (signposting has no national code)
cp -r "$REPO/mappings" "$WORK/mappings"
cp "$REPO/tests/golden/_mappings-custom/conceptmaps/local-triggers.json" "$WORK/mappings/conceptmaps/"
sed -i 's#^triggers = conceptmaps/triggers.json#& conceptmaps/local-triggers.json#' "$WORK/mappings/mappings.ini"

write_config "$PEER_PORT" "
[practice.Y01234]
service = wharfedale
region = Y62

[client.auditor-y62]
role = auditor
region = Y62
san = urn:nhs-region:Y62

[client.service]
role = service
ods = X26SP1
san = urn:ods:X26SP1

[audit]
checkpoint_every = 5
checkpoint_interval_s = 1
"
sed -i "s#^mappings_dir = .*#mappings_dir = $WORK/mappings#; 0,/^endpoint = /s#^endpoint = .*#&\npoll_interval_s = 1#" "$WORK/spbridge.ini"
start_spb || exit 1

fhir() { # METHOD PATH [BODY-FILE] -> body on stdout (as the service)
  local args=(-s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem"
    --key "$PKI/spbridge-client.key" -H 'Content-Type: application/fhir+json' -X "$1")
  [ $# -gt 2 ] && args+=(--data-binary @"$3")
  curl "${args[@]}" "https://127.0.0.1:$PEER_PORT/fhir/$2"
}
task_of() { fhir GET "Task?identifier=urn:ietf:rfc:3986%7Curn:uuid:$1" | jq '.entry[0].resource'; }
set_task() { # REFERRAL JQ-FILTER: the service updates its Task
  task_of "$1" | jq "$2 | del(.meta)" >"$WORK/task.json"
  fhir PUT "Task/$(jq -r .id "$WORK/task.json")" "$WORK/task.json" >/dev/null
}
referral_state_is() { # REFERRAL STATUS (as spbridge recorded it)
  "$SPB" referrals --config "$WORK/spbridge.ini" show "$1" 2>/dev/null |
    jq -e --arg s "$2" '.state[0].task_status == $s' >/dev/null
}
dead_rows_are() {
  [ "$("$SPB" outbox --config "$WORK/spbridge.ini" list --state dead --json 2>/dev/null | jq length)" = "$1" ]
}
as() { # CERT PATH -> the body on stdout
  curl -s --max-time 20 --cacert "$PKI/ca.pem" --cert "$PKI/$1.pem" --key "$PKI/$1.key" \
    "https://localhost:$SPB_PORT$2"
}
practices_are() { # FILE LIST: the practices (ODS) on a Bundle's entries, unique, comma-joined
  [ "$(jq -r '[.entry[].resource.entity[]?.what.identifier | select(.system == "https://fhir.nhs.uk/Id/ods-organization-code") | .value] | unique | join(",")' "$1")" = "$2" ]
}

# ------------------------------------------------------------------ the flows
for n in 1 2; do make_referral $n "$WORK/r$n.xml"; done
make_referral 4 "$WORK/r4.xml"
sed -i 's/ods="B83002"/ods="Y01234"/' "$WORK/r4.xml"
R1=$(event_uuid 1) R2=$(event_uuid 2) R3=$(event_uuid 3) R4=$(event_uuid 4) R5=$(event_uuid 5)
check "B83002 referral 1 accepted (202)" [ "$(post "$WORK/r1.xml")" = 202 ]
check "B83002 referral 2 accepted (202)" [ "$(post "$WORK/r2.xml")" = 202 ]
check "Y01234 referral accepted (202)" [ "$(post "$WORK/r4.xml" practice-Y01234)" = 202 ]
for r in $R1 $R2 $R4; do check "  ${r:0:8} delivered" wait_until 20 sr_is "$r" 1; done

peer_admin faults '{"mode":"status","status":500,"count":1,"method":"POST"}' >/dev/null
make_referral 3 "$WORK/r3.xml"
check "referral 3 accepted while the service fails once" [ "$(post "$WORK/r3.xml")" = 202 ]
check "  delivered on the retry" wait_until 20 sr_is "$R3" 1

peer_admin faults '{"mode":"status","status":422,"count":1,"method":"POST"}' >/dev/null
make_referral 5 "$WORK/r5.xml"
check "referral 5 accepted" [ "$(post "$WORK/r5.xml")" = 202 ]
check "  dead-lettered on the service's 422" wait_until 20 dead_rows_are 1

check "a declined event is recorded (202)" [ "$(post "$REPO/examples/native/declined.xml")" = 202 ]
cat >"$WORK/signposting.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<event xmlns="urn:spbridge:native:1" id="$(event_uuid 90)" kind="signposting">
  <practice ods="B83002"/>
  <recorded>2026-11-20T10:15:00+00:00</recorded>
  <patient><nhsNumber>$(nhs_number 90)</nhsNumber></patient>
  <code system="http://example.org/acme-gp/local-codes" code="ACMESP1"/>
</event>
XML
check "a signposting event is recorded (202)" [ "$(post "$WORK/signposting.xml")" = 202 ]

set_task "$R1" '.status = "accepted"'
check "the service accepts referral 1" wait_until 20 referral_state_is "$R1" accepted
set_task "$R1" '.status = "completed"'
check "  and completes it" wait_until 20 referral_state_is "$R1" completed
set_task "$R2" '.status = "rejected" | .statusReason = {"text":"outside our area"}'
check "the service rejects referral 2" wait_until 20 referral_state_is "$R2" rejected
check "everything delivered or dead (queue empty)" wait_until 20 queue_empty

# ------------------------------------------------------------------ who sees what
check "Y63 auditor: search answers a searchset Bundle (200)" \
  [ "$(get '/audit/AuditEvent?_count=1000' auditor-Y63)" = 200 ]
cp "$WORK/resp.json" "$WORK/y63.json"
check "  of AuditEvents" jq -e '.resourceType == "Bundle" and .type == "searchset" and (.entry | length) > 10 and ([.entry[].resource.resourceType] | unique == ["AuditEvent"])' "$WORK/y63.json"
check "  all of them B83002's (Y63)" practices_are "$WORK/y63.json" B83002
check "  none of Y62's: Y01234 appears nowhere in the answer" bash -c "! grep -q Y01234 '$WORK/y63.json'"
check "  total matches the entries" jq -e '.total == (.entry | length)' "$WORK/y63.json"
check "  every step of the flow is there (received, queued, delivery_attempt, dead_lettered, task_change_received)" \
  jq -e '[.entry[].resource.subtype[0].code] as $s | all(("received","translated","queued","delivery_attempt","delivered","dead_lettered","task_change_received","recorded"); . as $x | $s | index($x))' "$WORK/y63.json"
as admin '/audit/AuditEvent?practice=Y01234&_count=1000' >"$WORK/admin-y01234.json"
check "admin: Y01234's records exist" jq -e '(.entry | length) > 3' "$WORK/admin-y01234.json"
as auditor-Y62 '/audit/AuditEvent?_count=1000' >"$WORK/y62.json"
check "Y62 auditor: only Y01234's records" practices_are "$WORK/y62.json" Y01234
check "  none of B83002's" bash -c "! grep -q B83002 '$WORK/y62.json'"
as practice-B83002 '/audit/AuditEvent?_count=1000' >"$WORK/b83002.json"
check "practice B83002: only its own records" practices_are "$WORK/b83002.json" B83002

check "paging: _count=5 (200)" [ "$(get '/audit/AuditEvent?step=received&_count=5' auditor-Y63)" = 200 ]
check "  gives 5 and a next link" jq -e '(.entry | length) == 5 and ([.link[] | select(.relation == "next")] | length) == 1' "$WORK/resp.json"
NEXT=$(jq -r '.link[] | select(.relation == "next") | .url' "$WORK/resp.json" | sed 's#^https://[^/]*##')
LAST=$(jq '.entry[-1].resource.id | tonumber' "$WORK/resp.json")
check "  the next link answers (200)" [ "$(get "$NEXT" auditor-Y63)" = 200 ]
check "  and continues after the last id, with the same filter" jq -e --argjson last "$LAST" \
  '(.entry | length) > 0 and all(.entry[]; (.resource.id | tonumber) > $last and .resource.subtype[0].code == "received")' "$WORK/resp.json"
ONE=$(jq -r '.entry[0].resource.id' "$WORK/y63.json")
check "one AuditEvent by id (its own region)" [ "$(get "/audit/AuditEvent/$ONE" auditor-Y63)" = 200 ]
check "  but 404 for the other region's auditor" [ "$(get "/audit/AuditEvent/$ONE" auditor-Y62)" = 404 ]

check "Y63 auditor asking for a Y62 practice: 403" [ "$(get '/audit/AuditEvent?practice=Y01234' auditor-Y63)" = 403 ]
check "Y63 auditor asking for region Y62: 403" [ "$(get '/audit/AuditEvent?region=Y62' auditor-Y63)" = 403 ]
check "Y63 auditor asking for Y62's report: 403" [ "$(get '/audit/report?region=Y62' auditor-Y63)" = 403 ]
check "a practice asking for another practice: 403" [ "$(get '/audit/AuditEvent?practice=Y01234' practice-B83002)" = 403 ]
check "the service's certificate: 403" [ "$(get '/audit/AuditEvent' service)" = 403 ]
check "  and the dashboard: 403" [ "$(get '/dashboard' service)" = 403 ]
check "an unknown parameter: 400" [ "$(get '/audit/AuditEvent?pratice=B83002' auditor-Y63)" = 400 ]
check "the refusals are audited (refused/forbidden, who asked)" bash -c \
  "'$SPB' audit query --config '$WORK/spbridge.ini' --step refused --json | jq -e '[.[] | select(.result == \"forbidden\") | .identity] | (index(\"auditor\") != null) and (index(\"service\") != null) and (index(\"b83002\") != null)' >/dev/null"
as auditor-Y62 '/audit/AuditEvent?step=refused' >"$WORK/y62-refused.json"
check "  the Y62 auditor sees the attempt on its practice" jq -e \
  '[.entry[].resource.agent[0].who.identifier.value] | index("auditor") != null' "$WORK/y62-refused.json"
check "internal paths cannot be called from outside (404)" [ "$(get '/_internal/audit/forged/ok' admin)" = 404 ]
check "  and wrote nothing" bash -c "[ \"\$('$SPB' audit query --config '$WORK/spbridge.ini' --step forged --json | jq length)\" = 0 ]"

# ------------------------------------------------------------------ export
# 600 more records (the same referral sent again: each a received/duplicate record), so the
# export streams several chunks
curl -s --max-time 120 --cacert "$PKI/ca.pem" --cert "$PKI/practice-B83002.pem" \
  --key "$PKI/practice-B83002.key" -H 'Content-Type: application/xml' --data-binary @"$WORK/r1.xml" \
  $(for i in $(seq 600); do printf 'https://localhost:%s/events ' "$SPB_PORT"; done) >/dev/null
check "Y63 search total after 600 duplicates (200)" [ "$(get '/audit/AuditEvent?_count=1' auditor-Y63)" = 200 ]
Y63_TOTAL=$(jq .total "$WORK/resp.json")
check "  over 600 records" [ "$Y63_TOTAL" -gt 600 ]
check "Y63 export: NDJSON (200)" [ "$(get '/audit/$export' auditor-Y63)" = 200 ]
check "  one AuditEvent a line, exactly the records the search counts, in order" bash -c \
  "jq -s -e --argjson n $Y63_TOTAL 'length == \$n and all(.[]; .resourceType == \"AuditEvent\") and ([.[].id | tonumber] as \$i | \$i == (\$i | sort))' '$WORK/resp.json' >/dev/null"
check "  none of Y62's" bash -c "! grep -q Y01234 '$WORK/resp.json'"
head -50 "$WORK/resp.json" >"$WORK/sample.ndjson"
check "  AuditEvents and the searchset Bundle are valid FHIR R4 (HL7 JSON Schema, @medplum/core)" \
  node "$REPO/conformance/validators/validate.mjs" --expect valid "$WORK/sample.ndjson" "$WORK/y63.json"
check "  content type application/fhir+ndjson" bash -c "curl -s -D - -o /dev/null --cacert '$PKI/ca.pem' --cert '$PKI/auditor-Y63.pem' --key '$PKI/auditor-Y63.key' 'https://localhost:$SPB_PORT/audit/\$export' | grep -qi '^content-type: application/fhir+ndjson'"
as admin '/audit/$export' >"$WORK/admin-export.ndjson"
check "admin export holds both regions, in order" bash -c "grep -q Y01234 '$WORK/admin-export.ndjson' && grep -q B83002 '$WORK/admin-export.ndjson' && jq -s -e '[.[].id | tonumber] as \$ids | \$ids == (\$ids | sort) and length > 0' '$WORK/admin-export.ndjson' >/dev/null"

# ------------------------------------------------------------------ the report matches the flows
check "admin report (200)" [ "$(get '/audit/report' admin)" = 200 ]
cp "$WORK/resp.json" "$WORK/report.json"
sum() { # PRACTICE FIELD -> the field summed over that practice's weeks
  jq --arg p "$1" --arg f "$2" '[.rows[] | select(.practice == $p) | .[$f]] | add // 0' "$WORK/report.json"
}
expect() { # PRACTICE FIELD VALUE
  local got; got=$(sum "$1" "$2")
  if [ "$got" = "$3" ]; then ok "report: $1 $2 = $3"; else not_ok "report: $1 $2 = $3 (got $got)"; fi
}
expect B83002 referralsSent 4
expect B83002 accepted 1
expect B83002 completed 1
expect B83002 rejected 1
expect B83002 declined 1
expect B83002 signposting 1
expect B83002 deliveryFailures 2
expect B83002 retries 1
expect B83002 deadLetters 1
expect Y01234 referralsSent 1
expect Y01234 accepted 0
check "report: regions are the practices' (B83002 Y63, Y01234 Y62)" jq -e \
  '([.rows[] | select(.practice == "B83002") | .region] | unique) == ["Y63"] and ([.rows[] | select(.practice == "Y01234") | .region] | unique) == ["Y62"]' "$WORK/report.json"
check "report: one time to acceptance and one to completion for B83002, not negative" jq -e \
  '[.rows[] | select(.practice == "B83002")] | (map(.timeToAcceptance.n) | add) == 1 and (map(.timeToCompletion.n) | add) == 1 and all(.[]; (.timeToAcceptance.medianSeconds // 0) >= 0 and (.timeToCompletion.p90Seconds // 0) >= (.timeToAcceptance.medianSeconds // 0))' "$WORK/report.json"
check "Y63 auditor's report (200)" [ "$(get /audit/report auditor-Y63)" = 200 ]
check "  B83002 only" jq -e '([.rows[].practice] | unique) == ["B83002"]' "$WORK/resp.json"
as auditor-Y62 /audit/report >"$WORK/y62-report.json"
check "Y62 auditor's report: Y01234 only" jq -e '([.rows[].practice] | unique) == ["Y01234"]' "$WORK/y62-report.json"
check "CSV report (200)" [ "$(get '/audit/report?format=csv' auditor-Y63)" = 200 ]
check "  header and B83002's figures only" bash -c "head -1 '$WORK/resp.json' | grep -q '^practice,region,week,referrals_sent,accepted,rejected,declined,completed,signposting,' && grep -q '^B83002,Y63,' '$WORK/resp.json' && ! grep -q Y01234 '$WORK/resp.json'"
check "spbridge report (CLI) gives the same rows" bash -c \
  "'$SPB' report --config '$WORK/spbridge.ini' | jq -S .rows >'$WORK/cli-rows.json' && jq -S .rows '$WORK/report.json' | cmp -s - '$WORK/cli-rows.json'"
check "spbridge report --format csv" bash -c "'$SPB' report --config '$WORK/spbridge.ini' --format csv --practice Y01234 | tail -n +2 | grep -q '^Y01234,Y62,'"
check "spbridge audit query --region Y62: Y01234 only" bash -c \
  "'$SPB' audit query --config '$WORK/spbridge.ini' --region Y62 --limit 10000 --json | jq -e 'length > 0 and all(.[]; .practice == \"Y01234\")' >/dev/null"
check "spbridge audit query --referral: that referral's steps in order" bash -c \
  "'$SPB' audit query --config '$WORK/spbridge.ini' --referral $R3 --json | jq -e '[.[].step] as \$s | (\$s | index(\"received\")) < (\$s | index(\"delivered\")) and ([.[] | select(.step == \"delivery_attempt\")] | length) == 2' >/dev/null"

# ------------------------------------------------------------------ dashboard
check "Y63 dashboard (200, HTML)" [ "$(get /dashboard auditor-Y63)" = 200 ]
check "  shows B83002 and none of Y01234" bash -c "grep -q B83002 '$WORK/resp.json' && ! grep -q Y01234 '$WORK/resp.json' && grep -q '<svg' '$WORK/resp.json'"
check "  its stylesheet is served by spbridge itself" [ "$(get /dashboard/nhsuk.css auditor-Y63)" = 200 ]
check "  and points nowhere else" bash -c "! grep -Eq 'url\\((\"|'\\'')?(https?:)?//' '$WORK/resp.json'"

# ------------------------------------------------------------------ the chain
check "audit verify beside the running service: ok" "$SPB" audit verify --config "$WORK/spbridge.ini"
stop_spb
check "after a clean stop: audit verify ok" "$SPB" audit verify --config "$WORK/spbridge.ini"
check "  every record covered by a signed checkpoint" bash -c \
  "'$SPB' audit verify --config '$WORK/spbridge.ini' --json | jq -e '.ok and .signedUpTo == .lastRecord and .checkpoints >= 2' >/dev/null"
MAX=$("$SPB" audit verify --config "$WORK/spbridge.ini" --json | jq .lastRecord)
MID=$((MAX / 2))
tampered() { # NAME SQL -> a copy of the store with SQL applied, and its config
  sqlite3 "$WORK/var/spbridge.db" ".backup '$WORK/$1.db'"
  sqlite3 "$WORK/$1.db" "$2" >/dev/null
  sed "s#^store_path = .*#store_path = $WORK/$1.db#" "$WORK/spbridge.ini" >"$WORK/$1.ini"
}
names_first_bad() { # NAME RECORD: verify fails (exit 3) and names RECORD as the first bad one
  local out rc
  out=$("$SPB" audit verify --config "$WORK/$1.ini" 2>/dev/null); rc=$?
  [ $rc = 3 ] && grep -q "the first bad record is $2\$" <<<"$out"
}
tampered edited "UPDATE audit SET detail = 'nothing happened' WHERE id = $MID"
check "an edited record is found and named ($MID)" names_first_bad edited "$MID"
tampered regionmoved "UPDATE audit SET region = 'Y63' WHERE practice = 'Y01234'"
check "a record moved to another region is found" bash -c "! '$SPB' audit verify --config '$WORK/regionmoved.ini' >/dev/null 2>&1"
tampered deleted "DELETE FROM audit WHERE id = $MID"
check "a deleted record is found and named ($MID)" names_first_bad deleted "$MID"
tampered reordered "UPDATE audit SET id = -1 WHERE id = $MID; UPDATE audit SET id = $MID WHERE id = $((MID + 1)); UPDATE audit SET id = $((MID + 1)) WHERE id = -1;"
check "re-ordered records are found and named ($MID)" names_first_bad reordered "$MID"
tampered truncated "DELETE FROM audit WHERE id > $((MAX - 3))"
check "a truncated end is found and named ($((MAX - 2)))" names_first_bad truncated "$((MAX - 2))"
tampered truncated2 "DELETE FROM audit WHERE id > $((MAX - 3)); UPDATE sqlite_sequence SET seq = $((MAX - 3)) WHERE name = 'audit'"
check "  even with the table's sequence rewound (the stop checkpoint covers it)" names_first_bad truncated2 "$((MAX - 2))"
tampered headcut "DELETE FROM audit WHERE id <= 5"
check "records cut from the start without a prune are found" names_first_bad headcut 1
tampered pruned "SELECT 1"
check "audit prune deletes in batches" bash -c \
  "'$SPB' audit prune --config '$WORK/pruned.ini' --before \$(date -u -d tomorrow +%F) --batch 7 | grep -q 'pruned $MAX audit records'"
check "  and the chain still verifies" "$SPB" audit verify --config "$WORK/pruned.ini"
check "  anchored by signed prune checkpoints" bash -c \
  "[ \$(sqlite3 '$WORK/pruned.db' \"SELECT COUNT(*) FROM audit_checkpoints WHERE kind = 'prune'\") -ge $((MAX / 7)) ]"

# a service started again on the verified store goes on with the same chain
start_spb || exit 1
make_referral 6 "$WORK/r6.xml"
check "after a restart: a new referral (202)" [ "$(post "$WORK/r6.xml")" = 202 ]
check "  dashboard for an administrator" [ "$(get /dashboard admin)" = 200 ]
stop_spb
check "  the chain goes on and still verifies" "$SPB" audit verify --config "$WORK/spbridge.ini"
finish
