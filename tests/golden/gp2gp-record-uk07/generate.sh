#!/usr/bin/env bash
# A realistic GP2GP record (tests/golden/_gp2gp/make_record.py, scenario addressed-uk07).
exec python3 "$(dirname "$0")/../_gp2gp/make_record.py" "$1" addressed-uk07
