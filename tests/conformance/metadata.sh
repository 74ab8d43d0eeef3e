#!/usr/bin/env bash
# GET /metadata answers spbridge's CapabilityStatement as shipped
# (conformance/capabilitystatement-spbridge.json), to any registered identity, as
# application/fhir+json, and what it answers passes the built-in validator.
# usage: metadata.sh SPBRIDGE
SPB=$1
source "$(dirname "$0")/../service/lib.sh"
setup_pki
write_config "$(free_port)"
start_spb || exit 1

for who in practice-B83002 admin auditor-Y63; do
  status=$(get /metadata "$who")
  if [ "$status" = 200 ] && jq -e --slurpfile want "$REPO/conformance/capabilitystatement-spbridge.json" \
    '. == $want[0]' "$WORK/resp.json" >/dev/null; then
    ok "GET /metadata as $who: 200 and the shipped CapabilityStatement"
  else
    not_ok "GET /metadata as $who: status $status"
  fi
done
type=$(curl -s -o /dev/null -w '%{content_type}' --max-time 20 --cacert "$PKI/ca.pem" \
  --cert "$PKI/practice-B83002.pem" --key "$PKI/practice-B83002.key" "https://localhost:$SPB_PORT/metadata")
check "content type is application/fhir+json ($type)" test "$type" = application/fhir+json
get /metadata >/dev/null
check "the served statement passes spbridge validate" "$SPB" validate "$WORK/resp.json"
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.pem" \
  --cert "$PKI/practice-B83002.pem" --key "$PKI/practice-B83002.key" -X POST "https://localhost:$SPB_PORT/metadata")
check "POST /metadata is not an endpoint ($status)" test "$status" = 404
stop_spb
finish
