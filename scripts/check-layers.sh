#!/usr/bin/env bash
# Checks that dependencies point one way: core <- fhir <- mappings <- adapter
# (docs/architecture.md). Every spbridge header belongs to the layer whose folder holds its
# .c file; a source file or header may include headers of its own layer and the layers
# below, never above. Prints each violation as FILE:LINE and exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

layers=(core fhir mappings adapter)
rank() { # LAYER -> 0..3
  local i
  for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done
  echo 99
}

# the layer of a header: where its module's .c lives (a few are named differently)
header_layer() { # NAME (without .h)
  case "$1" in
    fhir_build) echo fhir; return ;;
    cli | store_internal | audit_internal) echo adapter; return ;;
  esac
  local l
  for l in "${layers[@]}"; do
    if [ -f "$l/$1.c" ] || [ -f "$l/$1.h" ]; then echo "$l"; return; fi
  done
  echo unknown
}

bad=0
check_file() { # FILE LAYER
  local file=$1 own n line name hl
  own=$(rank "$2")
  while IFS=: read -r n line; do
    name=$(sed -E 's/.*"spbridge\/([a-z_]+)\.h".*/\1/' <<<"$line")
    hl=$(header_layer "$name")
    if [ "$hl" = unknown ]; then
      echo "$file:$n: spbridge/$name.h belongs to no layer (no $name.c in ${layers[*]})"
      bad=1
    elif [ "$(rank "$hl")" -gt "$own" ]; then
      echo "$file:$n: $2 includes spbridge/$name.h from $hl, a layer above it"
      bad=1
    fi
  done < <(grep -n '#include "spbridge/' "$file" || true)
}

for l in "${layers[@]}"; do
  while IFS= read -r f; do check_file "$f" "$l"; done < <(find "$l" -name '*.[ch]' | sort)
done
for h in include/spbridge/*.h; do
  name=$(basename "$h" .h)
  hl=$(header_layer "$name")
  [ "$hl" = unknown ] && { echo "$h: belongs to no layer"; bad=1; continue; }
  check_file "$h" "$hl"
done
if [ $bad = 0 ]; then echo "layers: ok (${layers[*]}, each using only those before it)"; fi
exit $bad
