#!/usr/bin/env bash
# Delivery under failure, against the real FHIR peer: the peer down at first then up; 500s;
# 429 with Retry-After; a peer that hangs (timeouts); a permanent 4xx that dead-letters and is
# replayed. Every referral ends on the peer exactly once, and one failing referral never
# blocks another.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki || exit 1
PORT=$(free_port)
TIMEOUT_MS=1500 write_config "$PORT" && start_spb || exit 1

# 1. Peer down: accepted anyway, retried, delivered once the peer is up.
make_referral 1 "$WORK/r1.xml"
check "accepted while the service is down (202)" [ "$(post "$WORK/r1.xml")" = 202 ]
T1=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "the row is retrying with a reason" wait_until 10 event_state_is "$T1" retrying
get "/events/$T1" >/dev/null
check "  the reason names the connection failure" \
  jq -e '.deliveries[0].last_error | test("connect|Couldn|refused"; "i")' "$WORK/resp.json"
start_peer "$PORT" || exit 1
check "delivered once the peer is up" wait_until 20 sr_is "$(event_uuid 1)" 1

# 2. Two 500s, then success: three attempts, one ServiceRequest.
peer_admin faults '{"mode":"status","status":500,"count":2}' >/dev/null
make_referral 2 "$WORK/r2.xml"
post "$WORK/r2.xml" >/dev/null
T2=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "delivered after two 500s" wait_until 20 sr_is "$(event_uuid 2)" 1
get "/events/$T2" >/dev/null
check "  in three attempts" jq -e '.deliveries[0].attempts == 3' "$WORK/resp.json"

# 3. 429 with Retry-After: 2 -> the retry waits at least 2 s.
peer_admin faults '{"mode":"status","status":429,"count":1,"retryAfter":2}' >/dev/null
make_referral 3 "$WORK/r3.xml"
post "$WORK/r3.xml" >/dev/null
check "delivered after a 429" wait_until 20 sr_is "$(event_uuid 3)" 1
peer_admin requests >"$WORK/requests.json"
check "  the retry honoured Retry-After (>= 2 s later)" jq -e '
  def t: (sub("\\.[0-9]+Z$"; "Z") | fromdate)
         + ((capture("\\.(?<f>[0-9]+)Z$").f // "0") | ("0." + .) | tonumber);
  [.requests[] | select(.method == "POST")] | .[-2:] as $last
  | ($last[0].status == 429) and ((($last[1].time | t) - ($last[0].time | t)) >= 1.95)' \
  "$WORK/requests.json"

# 4. A peer that hangs: the attempt times out (timeout_ms 1500) and the retry succeeds.
peer_admin faults '{"mode":"hang","count":1}' >/dev/null
make_referral 4 "$WORK/r4.xml"
post "$WORK/r4.xml" >/dev/null
T4=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "delivered after a hung attempt" wait_until 20 sr_is "$(event_uuid 4)" 1
get "/events/$T4" >/dev/null
check "  the first attempt failed on the timeout" jq -e '.deliveries[0].attempts >= 2' "$WORK/resp.json"

# 5. The server applies the Bundle but the answer is lost: the retry creates nothing new.
peer_admin faults '{"mode":"drop-response","count":1}' >/dev/null
make_referral 5 "$WORK/r5.xml"
post "$WORK/r5.xml" >/dev/null
T5=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "delivered after a lost answer" wait_until 20 event_state_is "$T5" delivered
check "  exactly one ServiceRequest" sr_is "$(event_uuid 5)" 1

# 6. A permanent refusal (422 with an OperationOutcome) is dead-lettered and does not block
#    the next referral; replay sends it again.
peer_admin faults '{"mode":"status","status":422,"count":1}' >/dev/null
make_referral 6 "$WORK/r6.xml"
post "$WORK/r6.xml" >/dev/null
T6=$(jq -r '.events[0].trackingId' "$WORK/resp.json")
check "a 422 dead-letters the row" wait_until 20 event_state_is "$T6" dead
get "/events/$T6" >/dev/null
check "  the server's OperationOutcome is kept" \
  jq -e '.deliveries[0].response_json.resourceType == "OperationOutcome"' "$WORK/resp.json"
make_referral 7 "$WORK/r7.xml"
post "$WORK/r7.xml" >/dev/null
check "the next referral is not blocked" wait_until 20 sr_is "$(event_uuid 7)" 1
ROW=$(jq -r '.deliveries[0].id' <(get "/events/$T6" >/dev/null; cat "$WORK/resp.json"))
check "outbox list shows the dead row" bash -c "'$SPB' outbox --config '$WORK/spbridge.ini' list --state dead | grep -q '$T6'"
check "replay queues it again" "$SPB" outbox --config "$WORK/spbridge.ini" replay "$ROW"
check "  and it is delivered" wait_until 20 sr_is "$(event_uuid 6)" 1
NEWROW=$("$SPB" outbox --config "$WORK/spbridge.ini" list --json | jq -r --argjson r "$ROW" '[.[] | select(.replay_of == $r)][0].id')
check "  the replay keeps a link to the original row" [ "$NEWROW" != null ]

# Nothing was sent twice.
for n in 1 2 3 4 5 6 7; do
  check "  referral $n: one ServiceRequest" sr_is "$(event_uuid $n)" 1
done
check "retries are counted in metrics" metrics_have '^spbridge_delivery_retries_total [1-9]'
stop_spb
finish
