#!/usr/bin/env bash
# A realistic whole GP2GP record (tests/golden/_gp2gp/make_record.py, scenario admin-author).
exec python3 "$(dirname "$0")/../_gp2gp/make_record.py" "$1" admin-author
