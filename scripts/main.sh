#!/usr/bin/env bash
# The main job on embedded defaults: install what is missing, build, create a development
# PKI and a sample configuration (SQLite store) under var/dev/ if absent, start a local FHIR
# server as the social prescribing service (tests/peer), and run `spbridge serve` in the
# foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
SPB_PORT=${SPB_PORT:-8443}
PEER_PORT=${PEER_PORT:-8444}
DEV=var/dev

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
mkdir -p "$DEV/spool-B83002"
scripts/dev-pki.sh "$DEV/pki" >/dev/null

if [ ! -f "$DEV/spbridge.ini" ]; then
  cat >"$DEV/spbridge.ini" <<INI
; Development configuration written by scripts/main.sh (docs/configuration.md).
; Paths are relative to this file.
[spbridge]
mappings_dir = ../../mappings
store_path = spbridge.db
log_level = info

[server]
listen_address = 127.0.0.1
listen_port = $SPB_PORT
tls_cert = pki/server.pem
tls_key = pki/server.key
tls_ca = pki/ca.pem
tls_crl = pki/crl.pem

[delivery]
client_cert = pki/spbridge-client.pem
client_key = pki/spbridge-client-enc.key
client_key_passphrase_file = pki/spbridge-client.pass
ca_file = pki/ca.pem

[routing]
default_service = wharfedale

[service.wharfedale]
name = Wharfedale Social Prescribing Service
ods = X26SP1
endpoint = https://127.0.0.1:$PEER_PORT/fhir

[practice.B83002]
service = wharfedale
region = Y63
spool_dir = spool-B83002

[client.b83002]
role = practice
ods = B83002
san = urn:ods:B83002

[client.y01234]
role = practice
ods = Y01234
san = urn:ods:Y01234

[client.auditor-y63]
role = auditor
region = Y63
san = urn:nhs-region:Y63

[client.admin]
role = admin
subject = CN=spbridge administrator
INI
fi
build/spbridge config check "$DEV/spbridge.ini" >/dev/null

# The social prescribing service: an in-memory FHIR R4 server with mutual TLS.
node tests/peer/server.mjs --port "$PEER_PORT" --cert "$DEV/pki/peer.pem" \
  --key "$DEV/pki/peer.key" --ca "$DEV/pki/ca.pem" --quiet >"$DEV/fhir-peer.log" 2>&1 &
PEER_PID=$!
trap 'kill "$PEER_PID" 2>/dev/null || true' EXIT
sleep 1.5
kill -0 "$PEER_PID" 2>/dev/null || { cat "$DEV/fhir-peer.log" >&2; exit 1; }

cat >&2 <<MSG

spbridge is starting on https://localhost:$SPB_PORT (store: $DEV/spbridge.db).
The social prescribing service's FHIR server is https://127.0.0.1:$PEER_PORT/fhir.

Post a sample referral as practice B83002:

  curl --cacert $DEV/pki/ca.pem --cert $DEV/pki/practice-B83002.pem --key $DEV/pki/practice-B83002.key \\
       -H 'Content-Type: application/xml' --data-binary @examples/native/referral.xml \\
       https://localhost:$SPB_PORT/events

then follow it with GET /events/{trackingId} (same certificate), or look at
build/spbridge outbox --config $DEV/spbridge.ini list. Ctrl-C stops everything.

MSG
build/spbridge serve --config "$DEV/spbridge.ini"
