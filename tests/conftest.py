"""Shared fixtures: a verifier database built from rows, and running the command in-process."""

import io
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from keylime_reboot_fix import cli  # noqa: E402
from tests.support.fleets import SqliteFleet  # noqa: E402
# Real PostgreSQL/MariaDB servers (issue 7), here so that every module shares one per session.
from tests.support.fleet import db_server_pool, fleet_db  # noqa: E402,F401


class Result:
    def __init__(self, code, stdout, stderr, syslog):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.syslog = syslog  # [(level, message)], what went to syslog, in order

    @property
    def stderr_lines(self):
        return self.stderr.splitlines()


# Environment of a host without any Keylime configuration, so that no test reads this
# machine's /etc/keylime by accident through KEYLIME_* variables.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


def run_reset(args, environ=None, proc_root=None):
    """Run keylime-reset-failed in this process; syslog lines are captured instead of sent."""
    out, err, sent = io.StringIO(), io.StringIO(), []
    code = cli.main(list(args), stdout=out, stderr=err,
                    syslog_sink=lambda level, message: sent.append((level, message)),
                    environ=dict(CLEAN_ENV if environ is None else environ),
                    proc_root=proc_root or os.path.join(ROOT, "tests", "data", "proc-empty"))
    return Result(code, out.getvalue(), err.getvalue(), sent)


@pytest.fixture
def fleet(tmp_path):
    """fleet(rows) -> a database under test holding exactly those rows."""
    def make(rows):
        return SqliteFleet(str(tmp_path), rows)
    return make
