#!/usr/bin/env bash
# The whole test suite: install, build, run every CTest test (labels unit, golden,
# conformance, service, bench), then rebuild under AddressSanitizer + UndefinedBehavior-
# Sanitizer and run the unit, golden and service tests again (all but the long crash test),
# and check style (clang-format, banned functions, long functions) and that no layer
# includes a header from a layer above it (scripts/check-layers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

echo "== build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")
scripts/check-hazard-log.sh build

echo "== build and test under ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSPB_SANITIZE=ON -DBUILD_TESTING=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs" -L "unit|golden|service" -E "service.crash")

echo "== style and layers"
scripts/check-style.sh
scripts/check-layers.sh
