#!/usr/bin/env bash
# Runs one golden translation case: tests/golden/README.md describes the folder layout.
# usage: run_case.sh SPBRIDGE CASE_DIR SHARED_DIR
# With SPB_UPDATE_GOLDEN=1 the expected files are (re)written from the actual output.
set -u
spbridge=$1
case_dir=$2
shared=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL $(basename "$case_dir"): $*" >&2; exit 1; }

# 1. The input: input.xml as is, or a shared reference file with literal substitutions.
input="$work/input.xml"
if [ -f "$case_dir/input.xml" ]; then
  cp "$case_dir/input.xml" "$input"
elif [ -f "$case_dir/source" ]; then
  input="$work/input.xml"
  first=1
  while IFS= read -r line || [ -n "$line" ]; do
    [ -z "$line" ] && continue
    case "$line" in \#*) continue ;; esac
    if [ $first = 1 ]; then
      src="${line//@SHARED@/$shared}"
      src="${src//@REPO@/$repo}"
      [ -f "$src" ] || fail "source file $src not found"
      content=$(cat "$src"; printf x)
      content=${content%x}
      first=0
      continue
    fi
    # substitution lines: all|first <TAB> old <TAB> new
    IFS=$'\t' read -r mode old new <<<"$line"
    case "$content" in *"$old"*) ;; *) fail "substitution text not found: $old" ;; esac
    if [ "$mode" = all ]; then content=${content//"$old"/"$new"}
    else content=${content/"$old"/"$new"}; fi
  done <"$case_dir/source"
  printf '%s' "$content" >"$input"
elif [ -f "$case_dir/generate.sh" ]; then
  input="$work/input.xml"
  bash "$case_dir/generate.sh" "$shared" >"$input" || fail "generate.sh failed"
else
  fail "no input.xml, source or generate.sh"
fi

args=()
if [ -f "$case_dir/args" ]; then
  while IFS= read -r a || [ -n "$a" ]; do
    [ -z "$a" ] && continue
    a="${a//@SHARED@/$shared}"
    a="${a//@REPO@/$repo}"
    a="${a//@CASE@/$case_dir}"
    args+=("$a")
  done <"$case_dir/args"
fi

# 2. Run it twice: output must be byte-identical (determinism). The input is named
#    input.xml relative to the working folder so messages are the same on every machine.
cd "$work" || fail "cannot enter $work"
"$spbridge" translate "${args[@]}" input.xml >"$work/out" 2>"$work/err"
rc=$?
"$spbridge" translate "${args[@]}" input.xml >"$work/out2" 2>/dev/null
cmp -s "$work/out" "$work/out2" || fail "two runs gave different output"

expected_rc=0
[ -f "$case_dir/expected-exit" ] && expected_rc=$(tr -d '[:space:]' <"$case_dir/expected-exit")

if [ "${SPB_UPDATE_GOLDEN:-0}" = 1 ]; then
  cp "$work/out" "$case_dir/expected.ndjson"
  echo "$rc" >"$case_dir/expected-exit"
  echo "updated $(basename "$case_dir") (exit $rc)"
  exit 0
fi

# 3. Exit code, stdout byte for byte, stderr by required fragments.
[ "$rc" = "$expected_rc" ] || { cat "$work/err" >&2; fail "exit $rc, expected $expected_rc"; }
if ! cmp -s "$work/out" "$case_dir/expected.ndjson"; then
  diff <(tr ',' '\n' <"$case_dir/expected.ndjson") <(tr ',' '\n' <"$work/out") | head -40 >&2
  fail "stdout differs from expected.ndjson"
fi
if [ -f "$case_dir/expected-stderr" ]; then
  while IFS= read -r frag || [ -n "$frag" ]; do
    [ -z "$frag" ] && continue
    grep -qF -- "$frag" "$work/err" || { cat "$work/err" >&2; fail "stderr lacks: $frag"; }
  done <"$case_dir/expected-stderr"
fi
if [ -f "$case_dir/forbidden-stderr" ]; then
  while IFS= read -r frag || [ -n "$frag" ]; do
    [ -z "$frag" ] && continue
    if grep -qF -- "$frag" "$work/err" || grep -qF -- "$frag" "$work/out"; then
      fail "output leaks: $frag"
    fi
  done <"$case_dir/forbidden-stderr"
fi
# Logs never carry patient names: no case's stderr may contain a name from its input.
for name in Jane Example Rahman Asha Mensah Amara Priya Shah OKAFOR Chidi; do
  if grep -q "$name" "$input" 2>/dev/null && grep -q "$name" "$work/err"; then
    fail "stderr leaks the name '$name'"
  fi
done
echo "ok $(basename "$case_dir")"
