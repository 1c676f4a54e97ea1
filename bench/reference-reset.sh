#!/bin/bash
# Reference "B" of the benchmark: the hand-written reset the write-up describes
# (/usr/local/bin/keylime-reset-failed.sh, run as the verifier's ExecStartPre), written here from
# that description only: count the FAILED rows with the sqlite3 command line, move them 7 -> 3
# with a second sqlite3 call, log one line with logger. It resets every state-7 row whatever its
# cause or verifier, which is exactly what keylime-reset-failed does better; it is here to be
# timed, not used. Not shipped in the package.
#
# Usage: reference-reset.sh [DB]    (default: /var/lib/keylime/cv_data.sqlite)
set -euo pipefail

DB="${1:-/var/lib/keylime/cv_data.sqlite}"

if [ ! -f "$DB" ]; then
    logger -t keylime-reset-failed "no verifier database at $DB, nothing to reset"
    exit 0
fi

COUNT=$(sqlite3 "$DB" "SELECT COUNT(*) FROM verifiermain WHERE operational_state = 7;")
if [ "$COUNT" -gt 0 ]; then
    sqlite3 "$DB" "UPDATE verifiermain SET operational_state = 3 WHERE operational_state = 7;"
fi
logger -t keylime-reset-failed "reset $COUNT agent(s) from state 7 (FAILED) to state 3 (GET_QUOTE) in $DB"
