#!/usr/bin/env python3
"""README's first command: the reset on a built-in demo database, start to finish.

Builds a Keylime 7.14.3-schema verifier database in a temporary directory (agents in state 3,
state 7 for each cause, 9 and 10, two verifiers), then shows the table before, the dry run,
the real reset and the table after. Nothing outside the temporary directory is touched.
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests import demo_fleet  # noqa: E402
from tests.support import verifier_db  # noqa: E402


def show_table(title, path):
    print("\n=== %s ===" % title)
    print("%-32s %-11s %-5s %s" % ("agent_id", "verifier_id", "state", "last_event_id"))
    for row in verifier_db.dump(path):
        print("%-32s %-11s %-5s %s" % (row[0], row[1], row[2], row[4]))


def reset(*args):
    """Run the real command in a child process, as an admin would, stderr merged in order."""
    print("\n=== $ keylime-reset-failed --db DEMO_DB --state-file DEMO_STATE %s ===" % " ".join(args[4:]),
          flush=True)
    cmd = [sys.executable, "-m", "keylime_reboot_fix"] + list(args)
    return subprocess.run(cmd, cwd=ROOT, check=False, stderr=subprocess.STDOUT).returncode


def main():
    with tempfile.TemporaryDirectory(prefix="keylime-reset-demo-") as tmp:
        db = verifier_db.create(os.path.join(tmp, "cv_data.sqlite"), demo_fleet.rows())
        state = os.path.join(tmp, "reset-state.jsonl")
        show_table("verifier database before (demo: %s)" % db, db)
        common = ("--db", db, "--state-file", state)
        codes = [reset(*common, "--dry-run"), reset(*common)]
        show_table("verifier database after", db)
        print("\nexit codes: dry run %d, reset %d" % tuple(codes))
        return max(codes)


if __name__ == "__main__":
    sys.exit(main())
