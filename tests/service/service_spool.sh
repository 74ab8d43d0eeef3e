#!/usr/bin/env bash
# Spool intake and live reload: a file dropped in a practice's folder is taken atomically,
# stored and delivered, then moved to done/; a bad file goes to failed/ with an error file
# beside it. SIGHUP with a broken mapping set keeps the old set; a good reload applies.
SPB=$1
source "$(dirname "$0")/lib.sh"
setup_pki && start_peer && write_config "$PEER_PORT" && start_spb || exit 1
SPOOL=$WORK/spool-B83002
make_referral 1 "$WORK/r1.xml"
cp "$WORK/r1.xml" "$SPOOL/.r1.tmp" && mv "$SPOOL/.r1.tmp" "$SPOOL/r1.xml"
check "a spooled referral is delivered" wait_until 20 sr_is "$(event_uuid 1)" 1
check "  and the file moved to done/" wait_until 5 test -f "$SPOOL/done/r1.xml"
printf '<event xmlns="urn:spbridge:native:1">' >"$SPOOL/.bad.tmp" && mv "$SPOOL/.bad.tmp" "$SPOOL/bad.xml"
check "a bad file goes to failed/" wait_until 10 test -f "$SPOOL/failed/bad.xml"
check "  with an OperationOutcome beside it" \
  jq -e '.resourceType == "OperationOutcome"' "$SPOOL/failed/bad.xml.error.json"
sed 's/<practice ods="B83002"/<practice ods="Y01234"/' "$WORK/r1.xml" >"$SPOOL/other.xml"
check "another practice's event in B83002's spool is refused" wait_until 10 test -f "$SPOOL/failed/other.xml.error.json"
check "  as forbidden" jq -e '.issue[0].code == "security"' "$SPOOL/failed/other.xml.error.json"

# reload: break the mapping set, SIGHUP, the old set stays in force
cp -r "$REPO/mappings" "$WORK/mappings"
sed -i "s#^mappings_dir = .*#mappings_dir = $WORK/mappings#" "$WORK/spbridge.ini"
echo "this is not json" >"$WORK/mappings/conceptmaps/needs.json"
kill -HUP "$SPB_PID"
check "a broken mapping set is refused on SIGHUP" wait_until 10 grep -q 'event=reload_refused' "$WORK/serve.log"
make_referral 2 "$WORK/r2.xml"
check "  and the old set still translates (202)" [ "$(post "$WORK/r2.xml")" = 202 ]
cp "$REPO/mappings/conceptmaps/needs.json" "$WORK/mappings/conceptmaps/needs.json"
kill -HUP "$SPB_PID"
check "a good set is applied on SIGHUP" wait_until 10 grep -q 'event=reloaded' "$WORK/serve.log"
make_referral 3 "$WORK/r3.xml"
check "  and serving goes on (202)" [ "$(post "$WORK/r3.xml")" = 202 ]
check "both delivered" wait_until 20 sr_is "$(event_uuid 3)" 1
stop_spb
finish
