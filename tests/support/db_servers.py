"""Real PostgreSQL and MariaDB servers for the fleet tests, started by the tests themselves.

Debian's postgresql and mariadb-server binaries (tests/deps/apt/fleet.txt), run as their own
non-root users (postgres, mysql) from a temporary data directory, listening on 127.0.0.1 on a free
port and on a socket in that directory, with fsync off (the tests are about locking and rules,
not durability). Each test gets its own database with Keylime 7.14.3's verifiermain table.

The table is created from tests/data/verifier-schema-keylime-7.14.3.sql by a mechanical
translation of its `verifiermain` CREATE TABLE to the server's dialect (BLOB -> BYTEA/LONGBLOB,
the BOOLEAN default spelled for PostgreSQL, the two foreign keys to tables not created here
dropped): the same columns, types and primary key as the real schema, no hand-copied DDL.
The two-real-verifiers test lets Keylime's own migrations create the schema instead.

The application user `keylime` has a password with URL-special characters (PASSWORD), so that
the tests can check it never leaks.
"""

import grp
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

from tests.support.verifier_db import ROW_COLUMNS, SCHEMA

PASSWORD = "Zq7-fleet-p@ss:w/rd"
USER = "keylime"
_names = itertools.count(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verifiermain_ddl(dialect):
    """Keylime 7.14.3's verifiermain CREATE TABLE, translated to 'postgresql' or 'mysql'."""
    with open(SCHEMA, encoding="utf-8") as handle:
        text = handle.read()
    ddl = re.search(r'CREATE TABLE IF NOT EXISTS "verifiermain" \((.*?)\n\);', text, re.S).group(1)
    lines = [ln.strip().rstrip(",") for ln in ddl.replace(", consecutive", ",\n\tconsecutive").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("CONSTRAINT fk_")]
    body = ",\n  ".join(lines)
    if dialect == "postgresql":
        body = body.replace(" BLOB", " BYTEA").replace("BOOLEAN DEFAULT 1", "BOOLEAN DEFAULT true")
    else:
        body = body.replace(" BLOB", " LONGBLOB")
    return "CREATE TABLE verifiermain (\n  %s\n)" % body


class _Server:
    dialect = None
    scheme = None

    def __init__(self):
        self.dir = None
        self.port = None

    def _workdir(self, owner):
        self.dir = tempfile.mkdtemp(prefix="krf-%s-" % self.dialect)
        os.chmod(self.dir, 0o755)
        os.chown(self.dir, pwd.getpwnam(owner).pw_uid, grp.getgrnam(owner).gr_gid)

    def url(self, database, password=PASSWORD):
        return "%s://%s:%s@127.0.0.1:%d/%s" % (self.scheme, USER, quote(password, safe=""), self.port, database)

    def admin_engine(self, database=None):
        import sqlalchemy
        from sqlalchemy.pool import NullPool
        return sqlalchemy.create_engine(self._admin_url(database), poolclass=NullPool,
                                        isolation_level="AUTOCOMMIT")

    def execute(self, database, statements, params=None):
        import sqlalchemy
        engine = self.admin_engine(database)
        try:
            with engine.connect() as conn:
                results = []
                for sql in ([statements] if isinstance(statements, str) else statements):
                    res = conn.execute(sqlalchemy.text(sql), params or {})
                    results.append(res.fetchall() if res.returns_rows else res.rowcount)
                return results[-1]
        finally:
            engine.dispose()

    def execute_many(self, database, pairs):
        """Run (sql, params) pairs on one connection; params may be a list (executemany)."""
        import sqlalchemy
        engine = self.admin_engine(database)
        try:
            with engine.connect() as conn:
                for sql, params in pairs:
                    conn.execute(sqlalchemy.text(sql), params)
        finally:
            engine.dispose()

    def new_database(self, rows=(), schema=True):
        """A fresh database (with verifiermain and the given rows); returns the keylime user's URL."""
        name = "krf_%d_%d" % (os.getpid(), next(_names))
        self.create_database(name)
        if schema:
            self.execute(name, verifiermain_ddl(self.dialect))
            insert_rows(self, name, rows)
        return name

    def dump(self, database, columns=ROW_COLUMNS):
        """All rows as tuples of columns ordered by agent_id (same picture as verifier_db.dump)."""
        rows = self.execute(database, "SELECT %s FROM verifiermain ORDER BY agent_id" % ", ".join(columns))
        return [tuple(r) for r in rows]


def insert_rows(server, database, rows):
    """Insert the rows with one connection (one executemany per set of columns)."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    statements = ["INSERT INTO verifiermain (%s) VALUES (%s)" % (", ".join(cols), ", ".join(":" + c for c in cols))
                  for cols in groups]
    if statements:
        server.execute_many(database, list(zip(statements, groups.values())))


class PostgresServer(_Server):
    dialect = "postgresql"
    scheme = "postgresql+psycopg2"

    def bindir(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        return os.path.dirname(found[-1]) if found else None

    def available(self):
        return self.bindir() is not None and _has_user("postgres")

    def start(self):
        self._workdir("postgres")
        self.port = free_port()
        data = os.path.join(self.dir, "data")
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(as_pg + [os.path.join(self.bindir(), "initdb"), "-D", data, "-U", "postgres", "-N",
                                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                "--locale=C.UTF-8"], check=True, stdout=subprocess.DEVNULL)
        opts = "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off" % (
            self.port, self.dir)
        subprocess.run(as_pg + [os.path.join(self.bindir(), "pg_ctl"), "-D", data, "-o", opts, "-l",
                                os.path.join(self.dir, "log"), "-w", "-t", "60", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.execute("postgres", "CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PASSWORD.replace("'", "''")))
        return self

    def _admin_url(self, database):
        return "postgresql+psycopg2://postgres@/%s?host=%s&port=%d" % (database or "postgres", self.dir, self.port)

    def create_database(self, name):
        self.execute("postgres", "CREATE DATABASE %s OWNER %s" % (name, USER))

    def new_database(self, rows=(), schema=True):
        name = super().new_database(rows, schema)
        self.execute(name, "ALTER TABLE IF EXISTS verifiermain OWNER TO %s" % USER)
        return name

    def stop(self):
        if self.dir:
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bindir(), "pg_ctl"), "-D",
                            os.path.join(self.dir, "data"), "-m", "immediate", "-w", "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(self.dir, ignore_errors=True)


class MariaDBServer(_Server):
    dialect = "mysql"
    scheme = "mysql+pymysql"

    def __init__(self):
        super().__init__()
        self.proc = None

    def available(self):
        return os.path.exists("/usr/sbin/mariadbd") and shutil.which("mariadb-install-db") and _has_user("mysql")

    def start(self):
        self._workdir("mysql")
        self.port = free_port()
        data = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=" + data, "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--datadir=" + data, "--user=mysql",
             "--socket=" + self.socket, "--port=%d" % self.port, "--bind-address=127.0.0.1",
             "--pid-file=" + os.path.join(self.dir, "pid"), "--log-error=" + os.path.join(self.dir, "log"),
             "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
             "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.execute(None, "SELECT 1")
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mariadbd did not start: %s" % _tail(os.path.join(self.dir, "log")))
                time.sleep(0.2)
        self.execute(None, ["CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'" % (USER, PASSWORD.replace("'", "''")),
                            "GRANT ALL ON *.* TO '%s'@'127.0.0.1'" % USER])
        return self

    def _admin_url(self, database):
        return "mysql+pymysql://root@localhost/%s?unix_socket=%s" % (database or "", self.socket)

    def create_database(self, name):
        self.execute(None, "CREATE DATABASE %s" % name)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()  # its data directory is thrown away next: no clean shutdown needed
            self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _tail(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-2000:]
    except OSError:
        return "(no log)"


SERVERS = {"postgresql": PostgresServer, "mariadb": MariaDBServer}
