"""What the run prints on stdout: a table for people, or JSON for scripts.

Both are written row by row from the recorded verdicts, so a fleet of any size prints in
constant memory. The same report serves the dry run ("would reset") and the real run ("reset").
"""

from . import constants as C
from . import verdicts as V

COLUMNS = (("AGENT_ID", 36), ("VERIFIER", 10), ("ADDRESS", 21), ("LAST_EVENT_ID", 39),
           ("ATTESTATIONS", 12), ("VERDICT", 11))


def shown(value):
    """A value from the database as a log line or table cell shows it: control characters escaped,
    so that an agent_id can neither forge a line nor send escape sequences to a terminal."""
    text = value if isinstance(value, str) else repr(value) if isinstance(value, bytes) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _address(ip, port):
    return "%s:%s" % (ip if ip is not None else "-", port if port is not None else "-")


def verdict_label(verdict, dry_run):
    if verdict == V.RESET:
        return "would reset" if dry_run else "reset"
    return "left alone"


class TableReport:
    def __init__(self, out):
        self.out = out
        self.rows = 0

    def begin(self, context):
        self.context = context
        self.out.write("# %s agents in state FAILED (7) in %s, this verifier: '%s'\n"
                       % ("Dry run:" if context["dry_run"] else "Reset:", context["database"],
                          context["verifier_uuid"]))
        self.out.write("  ".join(name.ljust(width) for name, width in COLUMNS) + "  REASON\n")

    def row(self, r):
        agent_id, verifier_id, ip, port, event, _sev, count, _last, verdict, resets = r
        cells = (agent_id, verifier_id if verifier_id is not None else "NULL", _address(ip, port),
                 event if event is not None else "NULL", "-" if count is None else str(count),
                 verdict_label(verdict, self.context["dry_run"]))
        line = "  ".join(shown(c).ljust(w) for c, (_n, w) in zip(cells, COLUMNS))
        self.out.write("%s  %s\n" % (line, shown(V.reason(verdict, event, verifier_id, resets,
                                                           self.context["max_resets"]))))
        self.rows += 1

    def end(self, counts):
        if not self.rows:
            self.out.write("(no agent in state FAILED)\n")
        self.out.flush()


class JsonReport:
    def __init__(self, out):
        import json  # only for --json

        self.json = json
        self.out = out
        self.first = True

    def begin(self, context):
        self.context = context
        head = self.json.dumps(context, sort_keys=True)
        self.out.write(head[:-1] + ', "agents": [')

    def row(self, r):
        agent_id, verifier_id, ip, port, event, severity, count, last, verdict, resets = r
        item = {"agent_id": agent_id, "verifier_id": verifier_id, "ip": ip, "port": port,
                "operational_state": C.RESET_FROM, "last_event_id": event, "severity_level": severity,
                "attestation_count": count, "last_successful_attestation": last,
                "verdict": verdict, "resets": resets,
                "action": verdict_label(verdict, self.context["dry_run"]),
                "reason": V.reason(verdict, event, verifier_id, resets, self.context["max_resets"])}
        self.out.write(("" if self.first else ", ") + self.json.dumps(item, sort_keys=True))
        self.first = False

    def end(self, counts):
        self.out.write('], "summary": %s}\n' % self.json.dumps(counts, sort_keys=True))
        self.out.flush()
