"""Fixtures and helpers for running keylime-reset-failed against real PostgreSQL and MariaDB servers.

The servers (tests/support/db_servers.py) are started once per test session, on first use, and
stopped at its end. `fleet_db` gives each test a fresh database on one engine: it is
parametrized over ("postgresql", "mariadb").
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import db_servers
from tests.support.real import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINES = ("postgresql", "mariadb")


@pytest.fixture(scope="session")
def db_server_pool():
    """Started servers by engine name; each starts on first use, all stop when the session ends."""
    started = {}

    def get(engine):
        if engine not in started:
            server = db_servers.SERVERS[engine]()
            require(server.available(), "%s server binaries not installed (tests/deps/apt/fleet.txt)" % engine)
            started[engine] = server.start()
        return started[engine]
    yield get
    for server in started.values():
        server.stop()


class FleetDb:
    """One fresh database on one engine, and how to run the reset against it."""

    def __init__(self, engine, server, tmp_path):
        self.engine = engine
        self.server = server
        self.tmp = tmp_path
        self.name = None
        self.state_file = str(tmp_path / "state" / "reset-state.jsonl")

    def create(self, rows=(), schema=True):
        self.name = self.server.new_database(rows, schema=schema)
        return self

    @property
    def url(self):
        return self.server.url(self.name)

    def dump(self):
        return self.server.dump(self.name)

    def states(self):
        return {row[0]: row[2] for row in self.dump()}

    def execute(self, sql, params=None):
        return self.server.execute(self.name, sql, params)

    def config(self, uuid="default", url=None):
        self._configs = getattr(self, "_configs", 0) + 1
        path = self.tmp / ("verifier-%s-%d.conf" % (uuid, self._configs))
        path.write_text("[verifier]\nuuid = %s\ndatabase_url = %s\n" % (uuid, url or self.url))
        return str(path)

    def command(self, uuid="default", args=(), url=None, python=None, state_file=None):
        return ([python or sys.executable, "-m", "keylime_reboot_fix", "--config", self.config(uuid, url),
                 "--state-file", state_file or self.state_file, "--force"] + list(args))

    def run(self, uuid="default", args=(), url=None, python=None, env=None, state_file=None, timeout=120):
        """The reset as a separate process; CompletedProcess with .elapsed (seconds)."""
        start = time.monotonic()
        proc = subprocess.run(self.command(uuid, args, url, python, state_file), cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=timeout)
        proc.elapsed = time.monotonic() - start
        return proc

    def start(self, uuid="default", args=(), url=None, python=None, state_file=None):
        return subprocess.Popen(self.command(uuid, args, url, python, state_file), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run_json(self, uuid="default", args=(), **kw):
        proc = self.run(uuid, ["--json"] + list(args), **kw)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), proc


@pytest.fixture(params=ENGINES)
def fleet_db(request, db_server_pool, tmp_path):
    """A FleetDb (not yet created: call .create(rows)) on PostgreSQL, then on MariaDB."""
    return FleetDb(request.param, db_server_pool(request.param), tmp_path)


class Holder:
    """A second session that holds row locks, as another verifier's reset in progress would."""

    def __init__(self, fleet):
        import sqlalchemy
        from sqlalchemy.pool import NullPool
        self._text = sqlalchemy.text
        self.engine = sqlalchemy.create_engine(fleet.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.conn = self.engine.connect()
        if fleet.engine == "mariadb":
            # As the reset itself runs: READ COMMITTED (InnoDB's REPEATABLE READ would lock every
            # row a scan passes, which is not what another verifier's reset does).
            self.conn.execute(self._text("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"))
        self.conn.execute(self._text("START TRANSACTION" if fleet.engine == "mariadb" else "BEGIN"))

    def execute(self, sql, params=None):
        result = self.conn.execute(self._text(sql), params or {})
        return result.fetchall() if result.returns_rows else result.rowcount

    def commit(self):
        self.conn.execute(self._text("COMMIT"))

    def close(self):
        self.conn.close()
        self.engine.dispose()
