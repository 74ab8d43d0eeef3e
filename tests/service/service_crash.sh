#!/usr/bin/env bash
# Crash safety: a stream of referrals is posted while spbridge is killed with SIGKILL at
# random moments and restarted. The poster retries until it gets an answer, as a GP system
# would. At the end every accepted referral is on the FHIR peer exactly once (counted by
# ServiceRequest and Task identifier) and nothing else is.
SPB=$1
N=${SPB_CRASH_REFERRALS:-300}
KILLS=${SPB_CRASH_KILLS:-6}
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer && write_config "$PEER_PORT" && start_spb || exit 1
for ((i = 1; i <= N; i++)); do make_referral "$i" "$WORK/r$i.xml"; done

poster() {
  local i code tries
  for ((i = 1; i <= N; i++)); do
    tries=0
    while :; do
      SPB_PORT=$(cat "$WORK/spb.port" 2>/dev/null || echo 1)
      code=$(post "$WORK/r$i.xml")
      case "$code" in 200 | 202) echo "$i $code" >>"$WORK/accepted.txt"; break ;; esac
      tries=$((tries + 1))
      [ $tries -gt 400 ] && { echo "referral $i never accepted (last $code)" >>"$WORK/poster.err"; break; }
      sleep 0.05
    done
  done
}
poster &
POSTER=$!
for ((k = 1; k <= KILLS; k++)); do
  sleep "0.$((RANDOM % 9 + 2))"
  kill9_spb
  sleep 0.$((RANDOM % 5))
  start_spb || { not_ok "restart $k"; break; }
done
wait "$POSTER"
check "the poster got an answer for all $N referrals" [ "$(wc -l <"$WORK/accepted.txt")" = "$N" ]
check "no referral was refused" [ ! -s "$WORK/poster.err" ]
check "the outbox drains after the last restart" wait_until 120 queue_empty
peer_admin stats >"$WORK/stats.json"
check "$N ServiceRequests on the peer" jq -e --argjson n "$N" '.resources.ServiceRequest == $n' "$WORK/stats.json"
check "$N Tasks on the peer" jq -e --argjson n "$N" '.resources.Task == $n' "$WORK/stats.json"
check "each referral exactly once (ServiceRequest)" \
  jq -e --argjson n "$N" '[.serviceRequestsByIdentifier[]] | (length == $n) and all(. == 1)' "$WORK/stats.json"
check "each referral exactly once (Task)" \
  jq -e --argjson n "$N" '[.tasksByIdentifier[]] | (length == $n) and all(. == 1)' "$WORK/stats.json"
for ((i = 1; i <= N; i++)); do echo "urn:uuid:$(event_uuid $i)"; done >"$WORK/ids.txt"
check "every posted referral is among them" jq -e --rawfile ids "$WORK/ids.txt" '
  . as $s | [$ids | split("\n")[] | select(length > 0) | $s.serviceRequestsByIdentifier[.] == 1]
  | all' "$WORK/stats.json"
check "spbridge was really killed $KILLS times" [ "$(grep -c 'event=listening' "$WORK/serve.log")" -ge "$KILLS" ]
stop_spb
finish
