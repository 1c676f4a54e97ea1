"""All SQL of the reset, on the verifier's SQLite database (standard library sqlite3 only).

The run is one transaction: BEGIN IMMEDIATE takes the write lock before the selection is read,
so the rows chosen are the rows updated; the UPDATE re-checks state, verifier and cause, its row
count is verified, and anything unexpected rolls back. Per-row work happens in temporary tables
(in SQLite's page cache, spilling to a temporary file), so memory does not grow with the fleet.
A dry run opens the file read-only (mode=ro): it cannot write even by mistake.
"""

import sqlite3
import sys

from . import constants as C
from .report import shown
from .errors import DatabaseCorrupt, DatabaseLocked, DatabaseUnreadable, PermissionProblem, StateFileCorrupt

# Columns the reset reads; a database without them is not a Keylime verifier database.
REQUIRED_COLUMNS = ("agent_id", "verifier_id", "operational_state", "severity_level", "last_event_id",
                    "attestation_count", "last_successful_attestation", "ip", "port")

# Temporary tables in a small fixed page cache (64 KiB, 16 pages) spilling to a file, and rows
# fetched FETCH at a time: what a run holds is then the same for 35 FAILED rows and for 35,000.
# (With 512 KiB and 512 rows, A's peak RSS was 13.4 MiB at 1,000 agents and 16.4 MiB at 1,000,000;
# with these, 13.2 and 15.2 MiB, in no measurable extra time: the temporary file stays in the OS
# cache.) The main database keeps SQLite's default cache, as the sqlite3 shell does: a smaller one
# makes the UPDATE spill dirty pages more often, and every spill costs an fsync of the journal.
_PRAGMAS = ("PRAGMA temp_store = FILE", "PRAGMA temp.cache_size = -64")

FETCH = 64

_SETUP_TEMP = """
CREATE TEMP TABLE reset_state (agent_id TEXT PRIMARY KEY, resets INTEGER, attestation_count INTEGER,
                               last_successful_attestation INTEGER) WITHOUT ROWID;
CREATE TEMP TABLE verdicts (agent_id TEXT PRIMARY KEY, verifier_id TEXT, ip TEXT, port INTEGER,
                            last_event_id TEXT, severity_level INTEGER, attestation_count INTEGER,
                            last_successful_attestation INTEGER, verdict TEXT, resets INTEGER,
                            row_id INTEGER) WITHOUT ROWID;
CREATE TEMP TABLE selected (row_id INTEGER PRIMARY KEY);
"""

_FAILED_ROWS = """
SELECT v.agent_id, v.verifier_id, v.ip, v.port, v.last_event_id, v.severity_level,
       v.attestation_count, v.last_successful_attestation,
       s.resets, s.attestation_count, s.last_successful_attestation, v.rowid
FROM main.{table} AS v LEFT JOIN temp.reset_state AS s ON s.agent_id = v.agent_id
WHERE v.operational_state = {failed}
""".format(table=C.VERIFIER_TABLE, failed=C.RESET_FROM)


def _uri_path(path):
    """Escape what an SQLite file: URI gives a meaning to (urllib.parse costs start-up time)."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


# SQLite's primary result codes (sqlite3.h) for the errors that are not about the data.
_BUSY, _LOCKED, _READONLY, _IOERR, _CANTOPEN, _PERM = 5, 6, 8, 10, 14, 3


def _translate(exc, path):
    """Map an sqlite3 error to the package's error (and so to its exit code).

    By SQLite's result code (Python 3.11+ gives it), never by the message alone: a message can
    quote a value from the database, and a value must not be able to pass for a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code is None and sys.version_info < (3, 11):
        # Older Pythons give no code: read it from SQLite's own fixed wording at the start.
        start = text[:40]
        code = (_BUSY if start.startswith(("database is locked", "database table is locked")) else
                _READONLY if start.startswith("attempt to write a readonly database") else
                _CANTOPEN if start.startswith("unable to open database") else
                _IOERR if start.startswith("disk I/O error") else None)
    primary = code & 0xFF if code is not None else None
    if isinstance(exc, sqlite3.OperationalError) and primary is not None:
        if primary in (_BUSY, _LOCKED):
            return DatabaseLocked("database %s is locked by another process (busy timeout exceeded)" % path)
        if primary in (_READONLY, _PERM):
            return PermissionProblem("cannot write database %s: %s" % (path, text))
        if primary == _CANTOPEN:
            return DatabaseUnreadable("cannot open database %s: %s" % (path, text))
        if primary == _IOERR:
            return DatabaseUnreadable("I/O error on database %s" % path)
    if isinstance(exc, sqlite3.DatabaseError):
        return DatabaseCorrupt("database %s is corrupt or not SQLite: %s" % (path, text))
    return exc


class SqliteVerifierDb:
    """One connection to the verifier database for one reset run."""

    # With a rollback journal a COMMIT that fails leaves the database as it was (or with a hot
    # journal that the next opener rolls back).
    failed_commit_changes_nothing = True

    def __init__(self, path, write, busy_timeout):
        self.path = path
        self.write = write
        # file:// + an absolute path: an empty authority, so a path beginning with // stays a path.
        uri = "file://%s?mode=%s" % (_uri_path(path), "rw" if write else "ro")
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
            for pragma in _PRAGMAS:
                self.conn.execute(pragma)
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def has_verifier_table(self):
        """False on first boot (no table at all yet); DatabaseCorrupt for another program's database.

        Names compare as SQLite compares them, without regard to ASCII case."""
        objects = self._run(lambda: self.conn.execute(
            "SELECT type, lower(name) FROM sqlite_master WHERE type IN ('table', 'view')").fetchall())
        for kind, name in objects:
            if name == C.VERIFIER_TABLE.lower():
                if kind != "table":
                    raise DatabaseCorrupt("database %s is not a Keylime verifier database: %s is a %s, not a table"
                                          % (self.path, C.VERIFIER_TABLE, kind))
                return True
        if any(kind == "table" for kind, _name in objects):
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: it has tables but no %s"
                                  % (self.path, C.VERIFIER_TABLE))
        if objects:
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: it has views but no %s table"
                                  % (self.path, C.VERIFIER_TABLE))
        return False

    def check_columns(self):
        names = {r[1] for r in self._run(lambda: self.conn.execute(
            "PRAGMA table_info(%s)" % C.VERIFIER_TABLE).fetchall())}
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: %s has no column %s"
                                  % (self.path, C.VERIFIER_TABLE, ", ".join(missing)))
        # The reset finds its rows again by rowid: it must be the table's own row identity, not a
        # column of that name (which SQLite would read instead) nor missing (WITHOUT ROWID).
        shadowing = sorted(n for n in names if n.lower() in ("rowid", "_rowid_", "oid"))
        if shadowing:
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: %s has a column named %s"
                                  % (self.path, C.VERIFIER_TABLE, shadowing[0]))
        try:
            self.conn.execute("SELECT rowid FROM main.%s LIMIT 0" % C.VERIFIER_TABLE).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such column" not in str(exc):
                raise _translate(exc, self.path) from exc
            raise DatabaseCorrupt("database %s is not a Keylime verifier database: %s is a WITHOUT ROWID table"
                                  % (self.path, C.VERIFIER_TABLE)) from None

    def begin(self):
        """Start the run's transaction: the write lock at once for a reset, a snapshot for a dry run."""
        self._run(self.conn.execute, "BEGIN IMMEDIATE" if self.write else "BEGIN")
        self._run(lambda: [self.conn.execute(s) for s in _SETUP_TEMP.split(";") if s.strip()])

    def load_reset_state(self, entries, path):
        try:
            self.conn.executemany("INSERT INTO temp.reset_state VALUES (?, ?, ?, ?)", entries)
        except sqlite3.IntegrityError:
            raise StateFileCorrupt("reset-state file %s lists an agent twice" % path) from None
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def failed_rows(self):
        """Every state-FAILED row with what the reset state remembers of it.

        Yields (agent_id, verifier_id, ip, port, last_event_id, severity_level, attestation_count,
        last_successful_attestation, previous, row_id) where previous is (resets, attestation_count,
        last_successful_attestation) or None, and row_id the row's rowid, which comes back with
        the verdict (record_verdicts) so that reset() can find the row without the agent_id index.
        """
        for r in self._iterate(self._run(self.conn.execute, _FAILED_ROWS)):
            self._check_types(r)
            yield r[:8] + ((r[8], r[9], r[10]) if r[8] is not None else None, r[11])

    def _check_types(self, row):
        """SQLite stores any type in any column; Keylime writes text ids and integer counts. A row
        that is otherwise cannot be judged (or recorded in the state file): the run stops, the
        same way in a dry run and a real one, naming the row."""
        agent_id, count, last = row[0], row[6], row[7]
        if not isinstance(agent_id, str):
            raise DatabaseCorrupt("database %s has a FAILED row whose agent_id is not text: %s"
                                  % (self.path, shown(agent_id)))
        for column, value in (("attestation_count", count), ("last_successful_attestation", last)):
            if value is not None and not isinstance(value, int):
                raise DatabaseCorrupt("database %s: FAILED agent %s has a %s that is not an integer: %s"
                                      % (self.path, shown(agent_id), column, shown(value)))

    def record_verdicts(self, verdict_rows):
        """Store (agent_id, verifier_id, ip, port, event, severity, count, last, verdict, resets, row_id) rows."""
        self._run(self.conn.executemany,
                  "INSERT INTO temp.verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", verdict_rows)

    def count_verdicts(self, verdicts):
        """{verdict: rows} for each of `verdicts`, in one scan of temp.verdicts (a GROUP BY would sort)."""
        sql = "SELECT %s FROM temp.verdicts" % ", ".join(["coalesce(sum(verdict = ?), 0)"] * len(verdicts))
        return dict(zip(verdicts, self._run(lambda: self.conn.execute(sql, verdicts).fetchone())))

    def reset(self, verdict, uuid, events):
        """One UPDATE of the rows given `verdict`, re-checking state, verifier and cause; row count.

        The chosen rows' rowids (from the scan, in this same transaction) go into their own keyed
        table first: `rowid IN temp.selected` then visits the rows in rowid order, which is the
        order of the table's pages in the file, with no descent of the agent_id index per row; an
        IN (subquery) would also build an extra in-memory copy of every id."""
        self._run(self.conn.execute, "INSERT INTO temp.selected SELECT row_id FROM temp.verdicts WHERE verdict = ?",
                  (verdict,))
        sql = ("UPDATE main.{t} SET operational_state = {to} WHERE operational_state = {frm}"
               " AND verifier_id = ? AND rowid IN temp.selected"
               ).format(t=C.VERIFIER_TABLE, to=C.RESET_TO, frm=C.RESET_FROM)
        params = [uuid]
        if events is not None:
            sql += " AND last_event_id IN (%s)" % ", ".join("?" * len(events))
            params += list(events)
        return self._run(self.conn.execute, sql, params).rowcount

    def new_reset_state(self, verdict):
        """The reset state after reset(verdict): updated entries for those rows, the others kept.

        In agent_id order: both parts come in that order from their tables' keys, so SQLite merges
        them (MERGE (UNION ALL)) instead of sorting; no sorter memory."""
        cursor = self._run(self.conn.execute, """
            SELECT agent_id, resets, attestation_count, last_successful_attestation
              FROM temp.verdicts WHERE verdict = ?1
            UNION ALL
            SELECT agent_id, resets, attestation_count, last_successful_attestation
              FROM temp.reset_state AS s
             WHERE NOT EXISTS (SELECT 1 FROM temp.verdicts AS v WHERE v.agent_id = s.agent_id AND v.verdict = ?1)
            ORDER BY 1""", (verdict,))
        return self._iterate(cursor)

    def verdict_rows(self):
        """The recorded verdicts in agent_id order (agent_id, verifier_id, ip, port, event,
        severity, attestation_count, last_successful_attestation, verdict, resets)."""
        return self._iterate(self._run(self.conn.execute, """
            SELECT agent_id, verifier_id, ip, port, last_event_id, severity_level, attestation_count,
                   last_successful_attestation, verdict, resets
              FROM temp.verdicts ORDER BY agent_id"""))

    def _iterate(self, cursor):
        while True:
            rows = self._run(cursor.fetchmany, FETCH)
            if not rows:
                return
            yield from rows

    def commit(self):
        self._run(self.conn.execute, "COMMIT")

    def rollback(self):
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is closed next; SQLite rolls back on close

    def close(self):
        self.conn.close()

