"""A verifier database under test, with the operations the rule tests need.

The rule tests only talk to this interface (args to reach the database, dump, and the two
things the verifier itself does between boots: fail an agent again, count an attestation), so
the same tests can run against other database engines by adding a class with the same methods.
"""

import os
import sqlite3

from tests.support import verifier_db


class SqliteFleet:
    engine = "sqlite"

    def __init__(self, directory, rows):
        self.path = verifier_db.create(os.path.join(directory, "cv_data.sqlite"), rows)
        self.state_file = os.path.join(directory, "state", "reset-state.jsonl")

    @property
    def args(self):
        return ["--db", self.path, "--state-file", self.state_file]

    def dump(self):
        return verifier_db.dump(self.path)

    def states(self):
        return verifier_db.states(self.path)

    def _execute(self, sql, params):
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(sql, params)
            conn.commit()
        finally:
            conn.close()

    def fail_again(self, agent_id, event="internal.verifier.not_reachable"):
        """What the verifier does when the agent is still unreachable after a reset."""
        self._execute("UPDATE verifiermain SET operational_state = 7, last_event_id = ? WHERE agent_id = ?",
                      (event, agent_id))

    def attest(self, agent_id, when=1764770000):
        """What the verifier does on a successful attestation."""
        self._execute("UPDATE verifiermain SET attestation_count = attestation_count + 1, "
                      "last_successful_attestation = ? WHERE agent_id = ?", (when, agent_id))


class ServerFleet:
    """The same interface on a fresh database of a real PostgreSQL or MariaDB server (issue 7).

    The command reaches it as a fleet's verifier does: a configuration file whose database_url
    names the server (with the test user's password in it); `path` is how the command shows that
    URL, password masked.
    """

    def __init__(self, engine, server, directory, rows):
        from keylime_reboot_fix import database_url
        self.engine = engine
        self.server = server
        self.name = server.new_database(rows)
        self.url = server.url(self.name)
        self.path = database_url.masked(self.url)
        self.config = os.path.join(directory, "verifier.conf")
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write("[verifier]\nuuid = default\ndatabase_url = %s\n" % self.url)
        self.state_file = os.path.join(directory, "state", "reset-state.jsonl")

    @property
    def args(self):
        return ["--config", self.config, "--state-file", self.state_file]

    def dump(self):
        return self.server.dump(self.name)

    def states(self):
        return {row[0]: row[2] for row in self.dump()}

    def fail_again(self, agent_id, event="internal.verifier.not_reachable"):
        self.server.execute(self.name, "UPDATE verifiermain SET operational_state = 7, last_event_id = :e "
                            "WHERE agent_id = :a", {"e": event, "a": agent_id})

    def attest(self, agent_id, when=1764770000):
        self.server.execute(self.name, "UPDATE verifiermain SET attestation_count = attestation_count + 1, "
                            "last_successful_attestation = :w WHERE agent_id = :a", {"w": when, "a": agent_id})
