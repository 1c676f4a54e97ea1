"""All SQL of the reset on a fleet's shared PostgreSQL or MySQL/MariaDB database, via SQLAlchemy.

The same interface as sqlite_store.SqliteVerifierDb, for verifiers that share one database and
each own the rows whose verifier_id is their uuid. Imported only for such URLs, so the SQLite
path stays standard library only.

Transactions are written out as SQL (the connection is in AUTOCOMMIT mode and this module sends
BEGIN/START TRANSACTION, COMMIT and ROLLBACK itself), so that SQLAlchemy 1.4 and 2.x behave the
same and nothing commits behind the reset's back. The run is one READ COMMITTED transaction:

- it first locks this verifier's FAILED rows, and only those (SELECT ... FOR UPDATE). On
  MySQL/MariaDB, whose InnoDB would lock and wait on every row a scan passes, the candidates are
  read without locks first and then locked by primary key; another verifier's rows are never
  locked nor waited for. Waits are bounded by the busy timeout (PostgreSQL lock_timeout;
  innodb_lock_wait_timeout and lock_wait_timeout on MySQL/MariaDB) and end in DatabaseLocked (75).
- every FAILED row is then copied, in one statement (one snapshot: another verifier's reset is
  seen either entirely or not at all), into a temporary table; the per-row work happens in
  temporary tables read page by page, so memory does not grow with the fleet.
- the UPDATE re-checks state, verifier and cause; the caller verifies its row count.
A dry run is a read-only transaction (SET TRANSACTION READ ONLY / START TRANSACTION READ ONLY)
that takes no lock. The temporary tables are created before the transaction starts (DDL is not
allowed in a read-only transaction) and vanish with the session (NullPool: close means close).

Nothing here writes the URL's password: messages carry database_url.masked() and any driver text
goes through database_url.redact().
"""

import heapq
import math
import re

from . import constants as C
from . import database_url as U
from .errors import (ConfigError, DatabaseCorrupt, DatabaseLocked, DatabaseUnreadable, PermissionProblem,
                     ResetError, StateFileCorrupt)

PAGE = 512
REQUIRED_COLUMNS = ("agent_id", "verifier_id", "operational_state", "severity_level", "last_event_id",
                    "attestation_count", "last_successful_attestation", "ip", "port")
# Debian packages that provide the Python modules an engine needs (for the error message).
DEBIAN_PACKAGES = {"sqlalchemy": "python3-sqlalchemy", "psycopg2": "python3-psycopg2", "psycopg": "python3-psycopg",
                   "pymysql": "python3-pymysql", "MySQLdb": "python3-mysqldb"}

# Drivers tried, after SQLAlchemy's default, for a URL that names none (plain postgresql://):
# SQLAlchemy 2.1 defaults to psycopg (3), 1.4 and 2.0 to psycopg2; mysql:// defaults to mysqldb.
FALLBACK_DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql", "mysqldb"),
                    "mariadb": ("pymysql", "mysqldb")}

# SQLSTATEs (PostgreSQL) and error numbers (MySQL/MariaDB) that decide the exit code.
_PG_LOCKED = ("55P03", "40P01", "40001")            # lock_not_available, deadlock, serialization
_PG_DENIED = ("42501", "28P01", "28000", "25006")   # privilege, password, authorization, read-only txn
_PG_MISSING = ("3D000",)                            # database does not exist
_MY_LOCKED = (1205, 1213)                           # lock wait timeout, deadlock
_MY_DENIED = (1044, 1045, 1142, 1143, 1227, 1792, 1698)
# libpq reports a refused login without an SQLSTATE: recognised by its text.
_DENIED_TEXT = re.compile(r"authentication failed|pg_hba\.conf|permission denied", re.I)
_MY_MISSING = (1049, 2002, 2003, 2005, 2006, 2013)  # unknown database, cannot connect, lost


def _import_sqlalchemy(shown):
    try:
        import sqlalchemy
    except ImportError as exc:
        raise _missing_module(exc, shown) from None
    return sqlalchemy


def _missing_module(exc, shown, names=None):
    """ConfigError naming the module(s) that could not be imported, and their Debian packages."""
    if names is None:
        names = [(getattr(exc, "name", None) or str(exc).rsplit(" ", 1)[-1]).strip("'\"").split(".")[0]]
    packages = [DEBIAN_PACKAGES[n] for n in names if n in DEBIAN_PACKAGES]
    error = ConfigError("database_url %s needs the Python module %s, which is not installed%s"
                        % (shown, " or ".join("'%s'" % n for n in names),
                           " (Debian package %s)" % " or ".join(packages) if packages else ""))
    error.module = names[0]
    return error


class SqlAlchemyVerifierDb:
    """One connection to the fleet's verifier database for one reset run."""

    # A server whose COMMIT fails (a connection lost on the way) may have committed all the same.
    failed_commit_changes_nothing = False

    def __init__(self, url, write, busy_timeout, uuid):
        self.url = url
        self.uuid = uuid  # the verifier whose FAILED rows a reset locks
        self.shown = U.masked(url)
        self.write = write
        self.busy_timeout = busy_timeout
        self.in_transaction = False
        self.conn = self.engine = None
        sa = _import_sqlalchemy(self.shown)
        self._sa = sa
        from sqlalchemy import exc as sa_exc
        from sqlalchemy.pool import NullPool
        self._sa_exc = sa_exc
        try:
            parsed = sa.engine.make_url(url)
        except Exception:
            raise ConfigError("database_url %s is not a valid SQLAlchemy URL" % self.shown) from None
        self.backend = parsed.get_backend_name()
        self.mysql = self.backend in ("mysql", "mariadb")
        if self.backend != "postgresql" and not self.mysql:
            raise ConfigError("database_url %s: engine '%s' is not supported" % (self.shown, self.backend))
        seconds = max(1, int(math.ceil(busy_timeout)))
        connect_args = {"connect_timeout": seconds}
        kwargs = {"poolclass": NullPool, "isolation_level": "AUTOCOMMIT", "connect_args": connect_args}
        if int(sa.__version__.split(".")[0]) < 2:
            kwargs["future"] = True  # 2.0-style connection on SQLAlchemy 1.4: no library autocommit
        self.engine = self._engine(sa, parsed, kwargs)
        self._run(self._connect)

    def _engine(self, sa, parsed, kwargs):
        """The engine for the URL's driver; with none named, SQLAlchemy's default or any installed one."""
        candidates = [parsed]
        if "+" not in parsed.drivername:
            candidates += [parsed.set(drivername="%s+%s" % (self.backend, driver))
                           for driver in FALLBACK_DRIVERS[self.backend]]
        missing = []
        for candidate in candidates:
            try:
                return sa.create_engine(candidate, **kwargs)
            except ImportError as exc:
                name = _missing_module(exc, self.shown).module
                if name not in missing:
                    missing.append(name)
            except self._sa_exc.NoSuchModuleError:
                if candidate is parsed:
                    raise ConfigError("database_url %s: SQLAlchemy %s has no driver '%s'"
                                      % (self.shown, sa.__version__, parsed.drivername)) from None
                # a fallback this SQLAlchemy does not know (psycopg before 2.0): try the next
            except Exception as exc:
                raise self._translate(exc) from None
        error = _missing_module(None, self.shown, missing)
        raise error

    # --- plumbing --------------------------------------------------------------------------
    def _connect(self):
        self.conn = self.engine.connect()
        if self.mysql:
            seconds = max(1, int(math.ceil(self.busy_timeout)))
            self._exec("SET SESSION innodb_lock_wait_timeout = %d, lock_wait_timeout = %d" % (seconds, seconds))
            self._exec("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def _exec(self, sql, params=None):
        return self.conn.execute(self._sa.text(sql), params if params is not None else {})

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except ResetError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def _translate(self, exc):
        """The package's error for a driver or SQLAlchemy failure, its text redacted."""
        orig = getattr(exc, "orig", None) or exc
        text = U.redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__,
                        self.url)
        where = "database %s" % self.shown
        state = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
        number = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
        if state in _PG_LOCKED or number in _MY_LOCKED:
            return DatabaseLocked("%s: rows of this verifier are locked by another session for longer "
                                  "than the busy timeout (%gs): %s" % (where, self.busy_timeout, text))
        if state in _PG_DENIED or number in _MY_DENIED or _DENIED_TEXT.search(text):
            return PermissionProblem("%s: permission denied: %s" % (where, text))
        if state in _PG_MISSING or number in _MY_MISSING:
            return DatabaseUnreadable("cannot open %s: %s" % (where, text))
        if isinstance(exc, self._sa_exc.OperationalError) and state is None and number is None:
            return DatabaseUnreadable("cannot open %s: %s" % (where, text))  # e.g. connection refused
        if isinstance(exc, self._sa_exc.DBAPIError):
            return ResetError("%s: %s" % (where, text))
        return ResetError("%s: internal error: %s: %s" % (where, type(exc).__name__, text))

    def _pages(self, sql, params, width):
        """Rows of `sql` (which selects seq first, then `width` values) in seq order, a page at a time."""
        last = 0
        while True:
            rows = self._run(lambda: self._exec(sql + " AND seq > :after ORDER BY seq LIMIT %d" % PAGE,
                                                dict(params, after=last)).fetchall())
            if not rows:
                return
            for row in rows:
                yield tuple(row[1:1 + width])
            last = rows[-1][0]

    def _binary(self, column):
        """An ORDER BY key that sorts like SQLite and Python: by code point (UTF-8 bytes)."""
        return "CAST(%s AS BINARY)" % column if self.mysql else '%s COLLATE "C"' % column

    # --- the interface of SqliteVerifierDb --------------------------------------------------
    def has_verifier_table(self):
        """False before the first verifier's migrations created its table."""
        return self._run(lambda: self._sa.inspect(self.conn).has_table(C.VERIFIER_TABLE))

    def check_columns(self):
        names = {c["name"] for c in self._run(lambda: self._sa.inspect(self.conn).get_columns(C.VERIFIER_TABLE))}
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: %s has no column %s"
                                  % (self.shown, C.VERIFIER_TABLE, ", ".join(missing)))

    def _text_type(self):
        """VARCHAR with the collation of verifiermain.agent_id, so MySQL can compare the two."""
        if not self.mysql:
            return "VARCHAR(255)"
        collation = self._exec(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = DATABASE()"
            " AND table_name = :t AND column_name = 'agent_id'", {"t": C.VERIFIER_TABLE}).scalar()
        if collation and re.fullmatch(r"[A-Za-z0-9_]+", collation):
            return "VARCHAR(255) COLLATE %s" % collation
        return "VARCHAR(255)"

    def begin(self):
        """Temporary tables, then the transaction; a reset also locks this verifier's FAILED rows."""
        self._run(self._begin)

    def _begin(self):
        txt = self._text_type()
        temp = "CREATE TEMPORARY TABLE"
        self._exec("%s krf_reset_state (seq BIGINT NOT NULL, agent_id %s NOT NULL PRIMARY KEY, resets BIGINT,"
                   " attestation_count BIGINT, last_successful_attestation BIGINT)" % (temp, txt))
        self._exec("%s krf_candidates (agent_id %s NOT NULL PRIMARY KEY)" % (temp, txt))
        cols = ("seq BIGINT NOT NULL PRIMARY KEY, agent_id {t} NOT NULL, verifier_id {t}, ip {t}, port BIGINT,"
                " last_event_id {t}, severity_level BIGINT, attestation_count BIGINT,"
                " last_successful_attestation BIGINT").format(t=txt)
        self._exec("%s krf_failed (%s, p_resets BIGINT, p_count BIGINT, p_last BIGINT)" % (temp, cols))
        self._exec("%s krf_verdicts (%s, verdict VARCHAR(20) NOT NULL, resets BIGINT)" % (temp, cols))
        self._exec("CREATE INDEX krf_verdicts_agent ON krf_verdicts (verdict, agent_id)")
        if self.mysql:
            self._exec("START TRANSACTION" if self.write else "START TRANSACTION READ ONLY")
        else:
            self._exec("BEGIN ISOLATION LEVEL READ COMMITTED")
            if not self.write:
                self._exec("SET TRANSACTION READ ONLY")
            self._exec("SET LOCAL lock_timeout = '%dms'" % max(1, int(self.busy_timeout * 1000)))
        self.in_transaction = True
        if self.write:
            self._lock_own_failed_rows()

    def _lock_own_failed_rows(self):
        params = {"uuid": self.uuid, "failed": C.RESET_FROM}
        if self.mysql:
            # A consistent (lock-free) read of the candidates, then locks by primary key only.
            self._exec("INSERT INTO krf_candidates (agent_id) SELECT agent_id FROM %s"
                       " WHERE verifier_id = :uuid AND operational_state = :failed" % C.VERIFIER_TABLE, params)
            self._exec("SELECT count(*) FROM (SELECT v.agent_id FROM krf_candidates c STRAIGHT_JOIN %s v"
                       " ON v.agent_id = c.agent_id WHERE v.verifier_id = :uuid"
                       " AND v.operational_state = :failed ORDER BY v.agent_id FOR UPDATE) AS locked"
                       % C.VERIFIER_TABLE, params).scalar()
        else:
            self._exec("SELECT count(*) FROM (SELECT agent_id FROM %s WHERE verifier_id = :uuid"
                       " AND operational_state = :failed ORDER BY agent_id FOR UPDATE) AS locked"
                       % C.VERIFIER_TABLE, params).scalar()

    def _insert(self, table, rows):
        """INSERT rows (tuples of equal length) as multi-row VALUES, PAGE rows a statement."""
        batch = []

        def flush():
            width = len(batch[0])
            if self.conn.dialect.paramstyle in ("format", "pyformat"):
                # psycopg2, psycopg, pymysql, mysqldb: straight to the driver, which quotes the
                # values itself; SQLAlchemy's text() costs more than the server for big batches.
                row = "(%s)" % ", ".join(["%s"] * width)
                self.conn.exec_driver_sql("INSERT INTO %s VALUES %s" % (table, ", ".join([row] * len(batch))),
                                          tuple(value for r in batch for value in r))
                return
            values = ", ".join("(%s)" % ", ".join(":p%d_%d" % (i, j) for j in range(width))
                               for i in range(len(batch)))
            params = {"p%d_%d" % (i, j): value for i, row in enumerate(batch) for j, value in enumerate(row)}
            self._exec("INSERT INTO %s VALUES %s" % (table, values), params)
        for row in rows:
            batch.append(row)
            if len(batch) == PAGE:
                flush()
                batch = []
        if batch:
            flush()

    def load_reset_state(self, entries, path):
        rows = ((seq,) + tuple(entry) for seq, entry in enumerate(entries, 1))
        try:
            self._insert("krf_reset_state", rows)
        except self._sa_exc.IntegrityError:
            raise StateFileCorrupt("reset-state file %s lists an agent twice" % path) from None
        except ResetError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def failed_rows(self):
        """Every state-FAILED row with what the reset state remembers of it (see SqliteVerifierDb)."""
        self._run(self._exec, """
            INSERT INTO krf_failed
            SELECT row_number() OVER (ORDER BY {key}), v.agent_id, v.verifier_id, v.ip, v.port,
                   v.last_event_id, v.severity_level, v.attestation_count, v.last_successful_attestation,
                   s.resets, s.attestation_count, s.last_successful_attestation
              FROM {table} v LEFT JOIN krf_reset_state s ON s.agent_id = v.agent_id
             WHERE v.operational_state = :failed""".format(key=self._binary("v.agent_id"),
                                                          table=C.VERIFIER_TABLE),
                  {"failed": C.RESET_FROM})
        for r in self._pages("SELECT * FROM krf_failed WHERE 1 = 1", {}, 11):
            yield r[:8] + ((r[8], r[9], r[10]) if r[8] is not None else None,)

    def record_verdicts(self, verdict_rows):
        """Store (agent_id, verifier_id, ip, port, event, severity, count, last, verdict, resets) rows."""
        self._run(self._insert, "krf_verdicts", ((seq,) + tuple(row) for seq, row in enumerate(verdict_rows, 1)))

    def count_verdicts(self, verdicts):
        """{verdict: rows} for each of `verdicts`, in one statement."""
        rows = self._run(lambda: self._exec("SELECT verdict, count(*) FROM krf_verdicts GROUP BY verdict").fetchall())
        found = dict(rows)
        return {verdict: found.get(verdict, 0) for verdict in verdicts}

    def reset(self, verdict, uuid, events):
        """One UPDATE of the rows given `verdict`, re-checking state, verifier and cause; row count."""
        sql = ("UPDATE {t} SET operational_state = :to WHERE operational_state = :frm AND verifier_id = :uuid"
               " AND agent_id IN (SELECT agent_id FROM krf_verdicts WHERE verdict = :verdict)"
               ).format(t=C.VERIFIER_TABLE)
        params = {"to": C.RESET_TO, "frm": C.RESET_FROM, "uuid": uuid, "verdict": verdict}
        if events is not None:
            names = ["e%d" % i for i in range(len(events))]
            sql += " AND last_event_id IN (%s)" % ", ".join(":" + n for n in names)
            params.update(zip(names, events))
        return self._run(lambda: self._exec(sql, params).rowcount)

    def new_reset_state(self, verdict):
        """The reset state after this run, in agent_id order: `verdict` rows updated, others kept."""
        updated = self._pages("SELECT seq, agent_id, resets, attestation_count, last_successful_attestation"
                              " FROM krf_verdicts WHERE verdict = :v", {"v": verdict}, 4)
        kept = self._pages("SELECT s.seq, s.agent_id, s.resets, s.attestation_count,"
                           " s.last_successful_attestation FROM krf_reset_state s WHERE NOT EXISTS"
                           " (SELECT 1 FROM krf_verdicts d WHERE d.agent_id = s.agent_id AND d.verdict = :v)",
                           {"v": verdict}, 4)
        return heapq.merge(updated, kept, key=lambda entry: entry[0])

    def verdict_rows(self):
        """The recorded verdicts in agent_id order (the row tuples of record_verdicts)."""
        return self._pages("SELECT * FROM krf_verdicts WHERE 1 = 1", {}, 10)

    def commit(self):
        self._run(self._exec, "COMMIT")
        self.in_transaction = False

    def rollback(self):
        if self.in_transaction and self.conn is not None:
            self.in_transaction = False
            try:
                self._exec("ROLLBACK")
            except Exception:
                pass  # the connection is closed next; the server rolls back on disconnect

    def close(self):
        try:
            if self.conn is not None:
                self.conn.close()
            if self.engine is not None:
                self.engine.dispose()
        except Exception:
            pass
