#!/usr/bin/env bash
# Installs what spbridge needs to build and test on Debian 12 (run as root), then the
# pinned Node packages used by the conformance validators. Quick when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config git
  libxml2-dev libxml2-utils libjansson-dev libinih-dev libssl-dev openssl
  libcmocka-dev clang-format
  libsqlite3-dev sqlite3 libcurl4-openssl-dev libevent-dev curl jq
  chromium libnss3-tools)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Pinned npm packages: the validators (HL7 FHIR R4 JSON Schema, @medplum/core) for the
# conformance tests, the FHIR test peer (@medplum/fhir-router) for the service tests, and the
# NHS.UK frontend styles (nhsuk-frontend) bundled into /dashboard at build time. Chromium and
# libnss3-tools (above) are for the dashboard's browser test.
for dir in conformance/validators tests/peer dashboard; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
