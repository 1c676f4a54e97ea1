"""Time and peak memory of keylime-reset-failed on a large fleet in real PostgreSQL and MariaDB.

    .venv/bin/python bench/fleet_servers.py [AGENTS_PER_VERIFIER]   (default 20000)

Starts the test servers (tests/support/db_servers.py), fills one database with N unreachable
FAILED agents of verifier-a, N of verifier-b and N healthy ones, then runs a dry run and a reset
of verifier-a as separate processes and prints wall time and peak RSS (ru_maxrss) of each.
"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support import db_servers  # noqa: E402

NR = "internal.verifier.not_reachable"


def fill(server, database, n):
    rows = []
    for prefix, verifier, state, event in (("a", "verifier-a", 7, NR), ("b", "verifier-b", 7, NR),
                                           ("h", "verifier-a", 3, None)):
        rows += [{"agent_id": "%s-%06d" % (prefix, i), "verifier_id": verifier, "operational_state": state,
                  "last_event_id": event, "severity_level": 6 if event else None, "attestation_count": 0,
                  "ip": "10.0.0.1", "port": 9002} for i in range(n)]
    for start in range(0, len(rows), 5000):
        db_servers.insert_rows(server, database, rows[start:start + 5000])


# A fresh wrapper per run, so that ru_maxrss of its children is the reset's alone.
WRAPPER = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
           "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(args):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "keylime_reboot_fix"] + args,
                         cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    code, rss = out.stdout.split()
    if code != "0":
        raise SystemExit(out.stderr)
    return elapsed, int(rss)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for cls in (db_servers.PostgresServer, db_servers.MariaDBServer):
        server = cls().start()
        try:
            database = server.new_database()
            fill(server, database, n)
            work = tempfile.mkdtemp()
            conf = os.path.join(work, "verifier.conf")
            with open(conf, "w", encoding="utf-8") as handle:
                handle.write("[verifier]\nuuid = verifier-a\ndatabase_url = %s\n" % server.url(database))
            base = ["--config", conf, "--state-file", os.path.join(work, "state.jsonl"), "--force"]
            dry = run(base + ["--dry-run"])
            real = run(base)
            states = server.execute(database, "SELECT operational_state, count(*) FROM verifiermain "
                                              "GROUP BY operational_state ORDER BY 1")
            print("%-10s %d rows (%d FAILED of verifier-a): dry run %.2f s, reset %.2f s, peak RSS %.0f MiB; "
                  "states after %s" % (cls.dialect, 3 * n, n, dry[0], real[0], max(dry[1], real[1]) / 1024,
                                       [tuple(s) for s in states]))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
