#!/usr/bin/env bash
# Mechanical style is checked, not argued: clang-format and the banned-function list
# from ../shared/style.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t sources < <(git ls-files '*.c' '*.h' 2>/dev/null || find adapter fhir mappings include tests -name '*.[ch]')
status=0
if ! clang-format --dry-run --Werror "${sources[@]}" 2>/tmp/spb-format.txt; then
  head -20 /tmp/spb-format.txt >&2
  echo "style: run clang-format -i on the files above" >&2
  status=1
fi
if grep -nE '\b(sprintf|strcpy|strcat|strncpy|strtok|atoi|atol|gets|sscanf|gmtime|localtime)\s*\(' \
     "${sources[@]}" | grep -vE '^\S+:[0-9]+:\s*(//|/?\*)'; then
  echo "style: banned functions in use (see ../shared/style.md)" >&2
  status=1
fi
# A function fits on a screen: warn (not fail) about function bodies past 120 lines, so
# the long ones stay visible until they are split at the steps their comments name.
find_long() {
  awk -v max=120 '
    FNR == 1 { start = 0 }
    /^[a-zA-Z].*\(/ && !/;[[:space:]]*$/ { sig = FNR; name = $0 }
    /^\{/ { start = sig ? sig : FNR; fname = name }
    /^\}/ && start { if (FNR - start > max) printf "%s:%d: %d lines: %s\n", FILENAME, start, FNR - start, fname; start = 0; sig = 0 }
  ' "$@"
}
long=$(find_long $(printf '%s\n' "${sources[@]}" | grep '\.c$' | grep -v '^tests/'))
if [ -n "$long" ]; then
  echo "style: warning: functions longer than 120 lines (split them at their named steps):" >&2
  echo "$long" | sed 's/^/  /' >&2
fi
[ $status = 0 ] && echo "style: ok"
exit $status
