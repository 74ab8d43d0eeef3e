# Shared harness for the service tests: a development PKI, the real FHIR peer
# (tests/peer, @medplum/fhir-router behind Node https with client certificates) and
# `spbridge serve`, all on loopback, all stopped at exit. Source it; set SPB first.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/spb-service-XXXXXX)
PKI=$WORK/pki
PEER_PID=""
SPB_PID=""
PASSED=0
FAILED=0

cleanup() {
  [ -n "$SPB_PID" ] && kill -9 "$SPB_PID" 2>/dev/null
  [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then
    echo "work folder kept: $WORK" >&2
    [ -f "$WORK/serve.log" ] && tail -30 "$WORK/serve.log" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null; then ok "$what"; else not_ok "$what"; fi
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

wait_for_file() { # FILE SECONDS
  local i
  for ((i = 0; i < $2 * 20; i++)); do [ -s "$1" ] && return 0; sleep 0.05; done
  return 1
}

wait_until() { # SECONDS COMMAND... : polls every 100 ms
  local secs=$1 i; shift
  for ((i = 0; i < secs * 10; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}

setup_pki() { bash "$REPO/scripts/dev-pki.sh" "$PKI" >/dev/null; }

start_peer() { # [PORT]
  rm -f "$WORK/peer.port"
  node "$REPO/tests/peer/server.mjs" --port "${1:-0}" --cert "$PKI/peer.pem" \
    --key "$PKI/peer.key" --ca "$PKI/ca.pem" --port-file "$WORK/peer.port" --quiet \
    >>"$WORK/peer.log" 2>&1 &
  PEER_PID=$!
  wait_for_file "$WORK/peer.port" 30 || { echo "peer did not start" >&2; return 1; }
  PEER_PORT=$(cat "$WORK/peer.port")
}

stop_peer() { [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null; wait "$PEER_PID" 2>/dev/null; PEER_PID=""; }

free_port() { # a port nothing listens on (bound then released by the kernel)
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

write_config() { # PEER_PORT [extra ini text]
  mkdir -p "$WORK/var" "$WORK/spool-B83002"
  cat >"$WORK/spbridge.ini" <<INI
[spbridge]
mappings_dir = $REPO/mappings
store_path = $WORK/var/spbridge.db
log_level = info

[server]
listen_port = 0
tls_cert = $PKI/server.pem
tls_key = $PKI/server.key
tls_ca = $PKI/ca.pem
tls_crl = $PKI/crl.pem
spool_poll_ms = 200

[delivery]
workers = 2
client_cert = $PKI/spbridge-client.pem
client_key = $PKI/spbridge-client-enc.key
client_key_passphrase_file = $PKI/spbridge-client.pass
ca_file = $PKI/ca.pem
retry_base_ms = 200
retry_max_ms = 1000
timeout_ms = ${TIMEOUT_MS:-5000}
connect_timeout_ms = 1000
lease_ms = 10000

[routing]
default_service = wharfedale

[service.wharfedale]
name = Wharfedale Social Prescribing Service
ods = X26SP1
endpoint = https://127.0.0.1:$1/fhir

[practice.B83002]
service = wharfedale
region = Y63
spool_dir = $WORK/spool-B83002

[client.b83002]
role = practice
ods = B83002
san = urn:ods:B83002

[client.y01234]
role = practice
ods = Y01234
san = urn:ods:Y01234

[client.admin]
role = admin
subject = CN=spbridge administrator

[client.auditor]
role = auditor
region = Y63
san = urn:nhs-region:Y63
${2:-}
INI
}

start_spb() {
  rm -f "$WORK/spb.port"
  "$SPB" serve --config "$WORK/spbridge.ini" --port-file "$WORK/spb.port" \
    >>"$WORK/serve.log" 2>&1 &
  SPB_PID=$!
  wait_for_file "$WORK/spb.port" 20 || { echo "spbridge did not start" >&2; return 1; }
  SPB_PORT=$(cat "$WORK/spb.port")
}

stop_spb() { [ -n "$SPB_PID" ] && kill -TERM "$SPB_PID" 2>/dev/null; wait "$SPB_PID" 2>/dev/null; SPB_PID=""; }
kill9_spb() { [ -n "$SPB_PID" ] && kill -9 "$SPB_PID" 2>/dev/null; wait "$SPB_PID" 2>/dev/null; SPB_PID=""; }

# post FILE [CERT-NAME] [CONTENT-TYPE] -> prints the HTTP status; body in $WORK/resp.json
post() {
  local who=${2:-practice-B83002}
  curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.pem" \
    --cert "$PKI/$who.pem" --key "$PKI/$who.key" -H "Content-Type: ${3:-application/xml}" \
    --data-binary @"$1" "https://localhost:$SPB_PORT/events"
}

# get PATH [CERT-NAME] -> prints the HTTP status; body in $WORK/resp.json
get() {
  local who=${2:-practice-B83002}
  curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.pem" \
    --cert "$PKI/$who.pem" --key "$PKI/$who.key" "https://localhost:$SPB_PORT$1"
}

peer_admin() { # PATH [JSON]
  if [ $# -gt 1 ]; then
    curl -s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem" \
      --key "$PKI/spbridge-client.key" -H 'Content-Type: application/json' -d "$2" \
      "https://127.0.0.1:$PEER_PORT/_admin/$1"
  else
    curl -s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem" \
      --key "$PKI/spbridge-client.key" "https://127.0.0.1:$PEER_PORT/_admin/$1"
  fi
}

sr_count() { # REFERRAL-UUID -> ServiceRequests on the peer with that identifier
  peer_admin stats | jq -r --arg id "urn:uuid:$1" '.serviceRequestsByIdentifier[$id] // 0'
}

queue_empty() {
  get /healthz admin >/dev/null && [ "$(jq -r .queueDepth "$WORK/resp.json")" = 0 ]
}

outbox_state() { # OUTBOX-ID -> state
  "$SPB" outbox --config "$WORK/spbridge.ini" show "$1" 2>/dev/null | jq -r .state
}

# A valid NHS number (modulus 11) derived from N.
nhs_number() {
  local base=$((900000000 + $1 * 7)) d s c i
  while :; do
    s=0
    for ((i = 0; i < 9; i++)); do d=${base:i:1}; s=$((s + d * (10 - i))); done
    c=$((11 - s % 11)); [ $c = 11 ] && c=0
    [ $c != 10 ] && { echo "$base$c"; return; }
    base=$((base + 1))
  done
}

event_uuid() { printf '%08x-7e57-4000-8000-%012x' "$1" "$1"; }

# make_referral N FILE: a native referral for practice B83002 with its own ids.
make_referral() {
  local id nhs
  id=$(event_uuid "$1")
  nhs=$(nhs_number "$1")
  cat >"$2" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<event xmlns="urn:spbridge:native:1" id="$id" kind="referral">
  <practice ods="B83002"/>
  <recorded>2026-11-20T10:15:00+00:00</recorded>
  <patient><nhsNumber>$nhs</nhsNumber><gender>unknown</gender></patient>
  <code system="http://snomed.info/sct" code="871731000000106"/>
  <need system="http://snomed.info/sct" code="267076002"/>
  <consent>true</consent>
</event>
XML
}

# predicates for wait_until
sr_is() { [ "$(sr_count "$1")" = "$2" ]; }            # REFERRAL COUNT
event_state_is() {                                      # TRACKING-ID STATE
  get "/events/$1" admin >/dev/null && jq -e --arg s "$2" '.state == $s' "$WORK/resp.json" >/dev/null
}
peer_task_status_is() {                                 # REFERRAL STATUS
  curl -s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem" \
    --key "$PKI/spbridge-client.key" \
    "https://127.0.0.1:$PEER_PORT/fhir/Task?identifier=urn:ietf:rfc:3986%7Curn:uuid:$1" |
    jq -e --arg s "$2" '.entry[0].resource.status == $s' >/dev/null
}
metrics_have() { # REGEX
  curl -s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/admin.pem" --key "$PKI/admin.key" \
    "https://localhost:$SPB_PORT/metrics" | grep -qE "$1"
}
