#!/usr/bin/env bash
# The /dashboard page in a real browser: Debian's headless Chromium presents a client
# certificate (an NSS database in a private HOME holding the viewer's certificate and the
# development CA, and Chromium's AutoSelectCertificateForUrls policy for this server only),
# loads the page with every host but localhost unresolvable, and the test checks its DOM
# (who it shows, what it hides) and its screenshot (not blank; the NHS.UK header blue and the
# chart colours really painted, so the bundled stylesheet and the SVG charts rendered).
#
#   tests/dashboard/dashboard_browser.sh path/to/spbridge
#
# Exit 77 (CTest: skipped) when chromium or certutil is missing; scripts/install-deps.sh
# installs both. Needs root for the policy file in /etc/chromium/policies/managed, which is
# removed at exit.
SPB=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../service/lib.sh"

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ] || ! command -v certutil >/dev/null || ! command -v pk12util >/dev/null; then
  echo "skipped: needs chromium and libnss3-tools (scripts/install-deps.sh installs them)"
  exit 77
fi
POLICY_DIR=/etc/chromium/policies/managed
if ! mkdir -p "$POLICY_DIR" 2>/dev/null || [ ! -w "$POLICY_DIR" ]; then
  echo "skipped: cannot write Chromium's managed policy folder $POLICY_DIR (run as root)"
  exit 77
fi
POLICY=$POLICY_DIR/spbridge-dashboard-test-$$.json
trap 'rm -f "$POLICY"; cleanup' EXIT

setup_pki && start_peer || exit 1
write_config "$PEER_PORT" "
[practice.Y01234]
service = wharfedale
region = Y62
"
sed -i "0,/^endpoint = /s#^endpoint = .*#&\npoll_interval_s = 1#" "$WORK/spbridge.ini"
start_spb || exit 1

# some flows to draw: three B83002 referrals (Y63), one accepted and completed, and one
# Y01234 referral (Y62), which the Y63 auditor must not see
for n in 1 2 3; do make_referral $n "$WORK/r$n.xml"; post "$WORK/r$n.xml" >/dev/null; done
make_referral 4 "$WORK/r4.xml"
sed -i 's/ods="B83002"/ods="Y01234"/' "$WORK/r4.xml"
post "$WORK/r4.xml" practice-Y01234 >/dev/null
for n in 1 2 3 4; do wait_until 20 sr_is "$(event_uuid $n)" 1; done
fhir() {
  local args=(-s --max-time 10 --cacert "$PKI/ca.pem" --cert "$PKI/spbridge-client.pem"
    --key "$PKI/spbridge-client.key" -H 'Content-Type: application/fhir+json' -X "$1")
  [ $# -gt 2 ] && args+=(--data-binary @"$3")
  curl "${args[@]}" "https://127.0.0.1:$PEER_PORT/fhir/$2"
}
set_task() {
  fhir GET "Task?identifier=urn:ietf:rfc:3986%7Curn:uuid:$1" | jq ".entry[0].resource | $2 | del(.meta)" >"$WORK/task.json"
  fhir PUT "Task/$(jq -r .id "$WORK/task.json")" "$WORK/task.json" >/dev/null
}
accepted() { get /audit/report admin >/dev/null && jq -e '.totals.accepted == 1' "$WORK/resp.json" >/dev/null; }
set_task "$(event_uuid 1)" '.status = "accepted"'
check "a referral accepted by the service shows in the report" wait_until 20 accepted

# the policy: pick the (only) client certificate for this server, without asking
printf '{"AutoSelectCertificateForUrls": ["{\\"pattern\\":\\"https://localhost:%s\\",\\"filter\\":{}}"]}\n' \
  "$SPB_PORT" >"$POLICY"

# browse VIEWER WHAT: loads /dashboard as VIEWER (a certificate in $PKI) in a fresh profile;
# WHAT is dom (to $WORK/VIEWER.html) or png (to $WORK/VIEWER.png)
browse() {
  local who=$1 home="$WORK/home-$1"
  if [ ! -d "$home/.pki/nssdb" ]; then
    mkdir -p "$home/.pki/nssdb"
    certutil -N -d "sql:$home/.pki/nssdb" --empty-password
    certutil -A -d "sql:$home/.pki/nssdb" -n "spbridge development CA" -t "CT,C,C" -i "$PKI/ca.pem"
    openssl pkcs12 -export -in "$PKI/$who.pem" -inkey "$PKI/$who.key" -name "$who" \
      -out "$home/$who.p12" -passout pass:
    pk12util -i "$home/$who.p12" -d "sql:$home/.pki/nssdb" -W '' >/dev/null
  fi
  local flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-default-apps --hide-scrollbars --force-device-scale-factor=1 --lang=en-GB
    --window-size=1280,2400 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"
    "--user-data-dir=$WORK/profile-$who-$2")
  if [ "$2" = dom ]; then
    HOME=$home timeout 90 "$CHROMIUM" "${flags[@]}" --dump-dom \
      "https://localhost:$SPB_PORT/dashboard" >"$WORK/$who.html" 2>>"$WORK/chromium.log"
  else
    HOME=$home timeout 90 "$CHROMIUM" "${flags[@]}" "--screenshot=$WORK/$who.png" \
      "https://localhost:$SPB_PORT/dashboard" >>"$WORK/chromium.log" 2>&1
  fi
}
share() { # VIEWER COLOUR -> the fraction of the screenshot's pixels in that colour
  node "$HERE/png_stats.mjs" "$WORK/$1.png" "$2" | jq -r --arg c "$2" '.share[$c]'
}
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# ------------------------------------------------------------------ the Y63 auditor
browse auditor-Y63 dom
check "Y63 auditor: Chromium loaded the page with its certificate" grep -q 'Referral activity and audit' "$WORK/auditor-Y63.html"
check "  the page names the viewer and its scope" grep -q 'auditor for region Y63' "$WORK/auditor-Y63.html"
check "  B83002 is in the practice table" grep -q '<td class="nhsuk-table__cell">B83002</td>' "$WORK/auditor-Y63.html"
check "  nothing of Y01234 (region Y62) anywhere" bash -c "! grep -q Y01234 '$WORK/auditor-Y63.html'"
check "  three referrals sent, one accepted (summary cards)" bash -c \
  "grep -A3 'id=\"card-sent\"' '$WORK/auditor-Y63.html' | grep -q '>3<' && grep -A3 'id=\"card-accepted\"' '$WORK/auditor-Y63.html' | grep -q '>1<'"
check "  the charts are SVG with a bar per series and week" bash -c \
  "[ \$(grep -o '<rect ' '$WORK/auditor-Y63.html' | wc -l) -ge 4 ] && grep -q 'id=\"chart-referrals\"' '$WORK/auditor-Y63.html'"
check "  the stylesheet is spbridge's own, nothing else is loaded" bash -c \
  "grep -q 'href=\"/dashboard/nhsuk.css\"' '$WORK/auditor-Y63.html' && ! grep -Eq '(src|href)=\"(https?:)?//' '$WORK/auditor-Y63.html'"
check "  newest audit records are listed, all of its region" bash -c \
  "grep -q 'id=\"table-audit\"' '$WORK/auditor-Y63.html' && grep -q '<td class=\"nhsuk-table__cell\">Y63</td>' '$WORK/auditor-Y63.html' && ! grep -q '<td class=\"nhsuk-table__cell\">Y62</td>' '$WORK/auditor-Y63.html'"

browse auditor-Y63 png
check "Y63 auditor: a screenshot was taken" test -s "$WORK/auditor-Y63.png"
STATS=$(node "$HERE/png_stats.mjs" "$WORK/auditor-Y63.png" '#005eb8' '#007f3b' '#330072' '#ffffff')
echo "# screenshot: $STATS"
check "  it is 1280 pixels wide and not blank (many colours)" bash -c \
  "jq -e '.width == 1280 and .distinctColours > 50 and .share[\"#ffffff\"] < 0.99' <<<'$STATS' >/dev/null"
check "  the NHS.UK header blue fills the banner (the bundled stylesheet applied)" \
  at_least "$(jq -r '.share["#005eb8"]' <<<"$STATS")" 0.02
check "  the chart's accepted (green) and completed-series colours are painted" \
  at_least "$(jq -r '.share["#007f3b"]' <<<"$STATS")" 0.0002

# ------------------------------------------------------------------ an administrator, a practice
browse admin dom
check "admin: sees both practices" bash -c \
  "grep -q '<td class=\"nhsuk-table__cell\">B83002</td>' '$WORK/admin.html' && grep -q '<td class=\"nhsuk-table__cell\">Y01234</td>' '$WORK/admin.html'"
check "  and the state of the audit chain" grep -q 'Audit chain: ' "$WORK/admin.html"
browse practice-Y01234 dom
check "practice Y01234: its own figures only" bash -c \
  "grep -q 'practice Y01234' '$WORK/practice-Y01234.html' && grep -q '<td class=\"nhsuk-table__cell\">Y01234</td>' '$WORK/practice-Y01234.html' && ! grep -q B83002 '$WORK/practice-Y01234.html'"
browse practice-Y01234 png
check "  its screenshot is styled too" at_least "$(share practice-Y01234 '#005eb8')" 0.02

rm -f "$POLICY"
stop_spb
check "spbridge stopped cleanly" grep -q 'event=stopped' "$WORK/serve.log"
if [ -n "${SPB_SCREENSHOT_DIR:-}" ]; then
  mkdir -p "$SPB_SCREENSHOT_DIR" && cp "$WORK"/*.png "$SPB_SCREENSHOT_DIR"/
fi
finish
