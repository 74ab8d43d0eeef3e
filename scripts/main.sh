#!/usr/bin/env bash
# The main job on embedded defaults: install, build, and translate the bundled example
# GP events into FHIR R4 (one Bundle or report record per line on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== spbridge mappings check" >&2
build/spbridge mappings check
echo "== spbridge translate --config examples/spbridge.ini examples/gp2gp/*.xml examples/native/*.xml" >&2
exec build/spbridge translate --config examples/spbridge.ini examples/gp2gp/*.xml examples/native/*.xml
