#!/usr/bin/env bash
# Happy path: a referral posted over mutual TLS is accepted (202), delivered to the real FHIR
# peer once, reported by GET /events/{id} with the server's ids; posting it again answers
# with the same tracking id and queues nothing; the cancellation reaches the server.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer && write_config "$PEER_PORT" && start_spb || exit 1
REF=5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10

check "referral accepted with 202" [ "$(post "$REPO/examples/native/referral.xml")" = 202 ]
TRACK=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "a tracking id is returned" [ "${#TRACK}" = 36 ]
check "delivered to the peer once" wait_until 15 sr_is "$REF" 1
check "GET /events/{id} says delivered" wait_until 10 event_state_is "$TRACK" delivered
get "/events/$TRACK" >/dev/null
check "the server's ServiceRequest id is kept" \
  jq -e '[.deliveries[0].server_ids[] | select(.resourceType == "ServiceRequest" and (.id | length) > 0)] | length == 1' "$WORK/resp.json"
check "posting again answers 200" [ "$(post "$REPO/examples/native/referral.xml")" = 200 ]
check "  with the same tracking id, marked duplicate" \
  jq -e --arg t "$TRACK" '.events[0].trackingId == $t and .events[0].duplicate == true' "$WORK/resp.json"
sleep 1
check "still exactly one ServiceRequest on the peer" sr_is "$REF" 1
check "another practice cannot see this event (404)" [ "$(get "/events/$TRACK" practice-Y01234)" = 404 ]
check "the region's auditor can (200)" [ "$(get "/events/$TRACK" auditor-Y63)" = 200 ]
check "cancellation accepted (202)" [ "$(post "$REPO/examples/native/cancellation.xml")" = 202 ]
check "the server's Task is cancelled" wait_until 15 peer_task_status_is "$REF" cancelled
check "a declined event is accepted (202)" [ "$(post "$REPO/examples/native/declined.xml")" = 202 ]
check "  and recorded, never sent" jq -e '.events[0].state == "recorded"' "$WORK/resp.json"
check "healthz answers 200" [ "$(get /healthz admin)" = 200 ]
check "metrics count two deliveries" metrics_have '^spbridge_delivered_total 2$'
check "metrics show the server certificate's expiry" \
  metrics_have 'spbridge_certificate_expiry_timestamp_seconds\{certificate="server"\} [1-9]'
check "a practice may not read metrics (403)" [ "$(get /metrics)" = 403 ]
stop_spb
check "SIGTERM stops cleanly" grep -q 'event=stopped' "$WORK/serve.log"
finish
