"""Builds real SQLite verifier databases from Keylime 7.14.3's schema, for tests, demo and bench.

The schema file is an exact copy of what Keylime 7.14.3's migrations create
(tests/data/verifier-schema-keylime-7.14.3.sql); rows are plain dicts of column values.
"""

import os
import sqlite3

SCHEMA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data",
                      "verifier-schema-keylime-7.14.3.sql")

# Columns the reset reads or prints, in a stable order for before/after comparisons.
ROW_COLUMNS = ("agent_id", "verifier_id", "operational_state", "severity_level", "last_event_id",
               "attestation_count", "last_successful_attestation", "ip", "port")


def agent(agent_id, state, event=None, verifier="default", **extra):
    """One verifiermain row: the columns a reset looks at, plus any extra column given."""
    row = {
        "agent_id": agent_id,
        "verifier_id": verifier,
        "operational_state": state,
        "severity_level": 6 if event else None,
        "last_event_id": event,
        "attestation_count": 0,
        "last_successful_attestation": None,
        "ip": "127.0.0.1",
        "port": 9002,
        "supported_version": "2.1",
        "mtls_cert": "disabled",
    }
    row.update(extra)
    return row


def create(path, rows=(), schema=SCHEMA):
    """Create a database at path with the real schema and the given rows; returns path."""
    with open(schema, encoding="utf-8") as handle:
        ddl = handle.read()
    conn = sqlite3.connect(path)
    try:
        conn.executescript(ddl)
        insert_rows(conn, rows)
        conn.commit()
    finally:
        conn.close()
    return path


def insert_rows(conn, rows):
    for row in rows:
        cols = list(row)
        conn.execute(
            "INSERT INTO verifiermain (%s) VALUES (%s)" % (", ".join(cols), ", ".join("?" * len(cols))),
            [row[c] for c in cols])


def dump(path, columns=ROW_COLUMNS):
    """All rows as tuples of columns, ordered by agent_id: the exact before/after picture."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute("SELECT %s FROM verifiermain ORDER BY agent_id" % ", ".join(columns)).fetchall()
    finally:
        conn.close()


def states(path):
    """{agent_id: operational_state} for quick exact assertions."""
    return {row[0]: row[2] for row in dump(path)}
