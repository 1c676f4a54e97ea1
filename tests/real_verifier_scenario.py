"""The reboot-recovery scenario against the real Keylime 7.14.3 verifier, with exact checks.

Used by tests/test_real_verifier.py (pytest) and by tests/e2e-real-verifier (an operator's
report). Steps, as issue 5 part 1 asks:
  1. the real verifier fails agents whose ports are closed (internal.verifier.not_reachable),
     and, in a run of their own, one agent for a bad policy (internal.verifier.exception) and one
     whose host answers 404 (internal.verifier.no_quote); rows in 9 and 10, rows of another
     verifier and one without verifier_id are added to the database;
  2. the verifier is stopped and keylime-reset-failed runs as the unit's ExecStartPre does:
     no --db, the verifier's own environment (the same configuration search);
  3. the verifier is started again: exactly the reset agents are polled (a listener on every
     agent's port records each quote request), nothing else changes; the time from verifier
     start to the first quote request on each reset agent is measured;
  4. after the next reset, one agent answers 403 and one answers 500: the verifier reached both;
  5. reset and restart until the reset cap (3) is reached: the agents still unreachable are then
     left FAILED, with the reset's log line saying why, and the verifier polls nobody.

Every check compares exact values; a failure raises AssertionError with expected and actual.
Runs only from python3 with the standard library (the verifier has its own cached venv).
"""

import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support import keylime_verifier as kv  # noqa: E402

NR = "internal.verifier.not_reachable"
EXC = "internal.verifier.exception"
NQ = "internal.verifier.no_quote"
PCR = "pcr_validation.invalid_pcr_7"
MAX_RETRIES = 2          # each unreachable agent: 1 request + 2 retries, then FAILED
RETRY_INTERVAL = 0.5     # seconds, no exponential backoff: an agent fails in about 1 s
MAX_RESETS = 3           # the command's default cap; the scenario passes no --max-resets
PREVIOUSLY_ATTESTED = 1_796_000_000

UNREACHABLE = ("unreachable-1", "unreachable-2", "unreachable-3")
OTHER_CAUSE = ("other-cause-exception", "other-cause-no-quote")
ADDED = ("invalid-quote", "tenant-failed", "other-verifier-failed", "other-verifier-healthy",
         "no-verifier-id")
ALL = UNREACHABLE + OTHER_CAUSE + ADDED
WAIT = 180.0             # seconds: generous, for a loaded 2-core machine


class ForeignVerifier(RuntimeError):
    """Another keylime_verifier runs on this host: the reset would (rightly) refuse with 69."""


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError("%s:\n  expected: %r\n  actual:   %r" % (what, expected, actual))


def quote_request(line):
    return line.startswith("GET /v2.1/quotes/integrity?") and line.endswith(" HTTP/1.1")


class Scenario:
    def __init__(self, workdir, say=print):
        self.workdir = workdir
        self.say = say
        self.state_file = os.path.join(workdir, "reset-state.jsonl")
        self.ports = {agent: kv.free_port() for agent in ALL}
        self.listeners = {}
        self.figures = {"verifier_starts": []}
        self.resets = []
        started = time.monotonic()
        venv = kv.keylime_venv()
        self.figures["venv_seconds"] = round(time.monotonic() - started, 1)
        self.v = kv.Verifier(os.path.join(workdir, "verifier"), venv=venv, max_retries=MAX_RETRIES,
                             retry_interval=RETRY_INTERVAL)

    # --- pieces ---------------------------------------------------------------------------
    def start(self):
        run = self.v.start(timeout=WAIT)
        self.figures["verifier_starts"].append(round(run["ready"] - run["started"], 2))
        return run

    def listen(self, statuses=None):
        """A recording listener on every agent's port; status None drops the connection."""
        self.close_listeners()
        statuses = statuses or {}
        for agent in ALL:
            self.listeners[agent] = kv.StandInAgent(self.ports[agent], statuses.get(agent))

    def close_listeners(self):
        for listener in self.listeners.values():
            listener.close()
        self.listeners = {}

    def requests(self):
        return {agent: [line for _t, line in listener.seen()] for agent, listener in self.listeners.items()}

    def wait_failed(self, agents):
        """Until the verifier has written FAILED for each agent and stopped polling it."""
        def done():
            log = self.v.log()
            states = self.v.states()
            return all("Agent %s failed, stopping polling" % a in log and states.get(a) == 7 for a in agents)
        self.v.wait_for(done, WAIT, "FAILED of %s" % ", ".join(agents))
        time.sleep(0.3)

    def row(self, agent, state, severity, event, verifier="default", count=0, last=None):
        return (agent, verifier, state, severity, event, count, last, "127.0.0.1", self.ports[agent])

    def reset(self):
        """keylime-reset-failed as ExecStartPre runs it (only the state file moved to the temp dir)."""
        left = kv.wait_no_verifiers(120)
        if left:
            raise ForeignVerifier("a keylime_verifier outside this test runs on this host (pid %s)" % left)
        done = kv.run_reset(self.v, "--state-file", self.state_file)
        self.resets.append({"returncode": done.returncode, "seconds": round(done.duration, 2),
                            "stderr": done.stderr.splitlines()})
        if done.returncode != 0:
            raise AssertionError("keylime-reset-failed exited %d:\n%s%s" % (done.returncode, done.stdout,
                                                                           done.stderr))
        return done.stderr.splitlines()

    def reset_line(self, agent, n):
        return ("keylime-reset-failed: reset agent %s (127.0.0.1:%d, %s) from FAILED (7) to GET_QUOTE (3): "
                "reset %d of %d without attestation" % (agent, self.ports[agent], NR, n, MAX_RESETS))

    def cap_line(self, agent):
        return ("keylime-reset-failed: warning: agent %s left FAILED: reset %d times without a successful "
                "attestation since (max %d); check the agent host, then reactivate it with "
                "'keylime_tenant -c reactivate -u %s'" % (agent, MAX_RESETS, MAX_RESETS, agent))

    def summary_line(self, reset, other_cause, cap):
        return ("keylime-reset-failed: reset %d agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) "
                "in %s; left alone: %d other cause, 1 other verifier, 1 no verifier, %d cap reached"
                % (reset, self.v.db_path, other_cause, cap))

    # --- the steps ------------------------------------------------------------------------
    def step1_verifier_produces_failures(self):
        self.say("step 1: the real verifier fails agents (closed ports, bad policy, 404)")
        self.start()                      # first start: migrations create the tables, CA generated
        self.v.stop()
        v = self.v
        v.insert_agents([
            kv.pull_agent("other-cause-exception", self.ports["other-cause-exception"],
                          tpm_policy=json.dumps({"mask": "0x0"})),   # plain JSON: the verifier throws
            kv.pull_agent("other-cause-no-quote", self.ports["other-cause-no-quote"]),
        ])
        # In a run of their own: Keylime 7.14.3's process_agent() shares one default Failure object
        # per worker, so once an exception is recorded there, later unreachable agents of the same
        # worker are recorded with last_event_id internal.verifier.exception too.
        self.listen({"other-cause-no-quote": 404})
        self.start()
        self.wait_failed(OTHER_CAUSE)
        v.stop()
        requests = self.requests()
        expect({a: [quote_request(line) for line in r] for a, r in requests.items()},
               {a: ([True] if a == "other-cause-no-quote" else []) for a in ALL},
               "quote requests: one to the 404 host (404 is not retried), none to the bad-policy agent")
        self.close_listeners()            # from here on every port is closed

        v.insert_agents([
            kv.pull_agent("unreachable-1", self.ports["unreachable-1"]),
            kv.pull_agent("unreachable-2", self.ports["unreachable-2"]),
            kv.pull_agent("unreachable-3", self.ports["unreachable-3"], attestation_count=12,
                          last_successful_attestation=PREVIOUSLY_ATTESTED),
            kv.pull_agent("invalid-quote", self.ports["invalid-quote"], state=9, event=PCR),
            kv.pull_agent("tenant-failed", self.ports["tenant-failed"], state=10),
            kv.pull_agent("other-verifier-failed", self.ports["other-verifier-failed"], state=7, event=NR,
                          verifier_id="verifier-b"),
            kv.pull_agent("other-verifier-healthy", self.ports["other-verifier-healthy"], state=3,
                          verifier_id="verifier-b"),
            kv.pull_agent("no-verifier-id", self.ports["no-verifier-id"], state=7, event=NR, verifier_id=None),
        ])
        self.start()
        self.wait_failed(UNREACHABLE)
        v.stop()
        self.failed = {
            "unreachable-1": self.row("unreachable-1", 7, 6, NR),
            "unreachable-2": self.row("unreachable-2", 7, 6, NR),
            "unreachable-3": self.row("unreachable-3", 7, 6, NR, count=12, last=PREVIOUSLY_ATTESTED),
            "other-cause-exception": self.row("other-cause-exception", 7, 6, EXC),
            "other-cause-no-quote": self.row("other-cause-no-quote", 7, 6, NQ),
            "invalid-quote": self.row("invalid-quote", 9, 6, PCR),
            "tenant-failed": self.row("tenant-failed", 10, None, None),
            "other-verifier-failed": self.row("other-verifier-failed", 7, 6, NR, verifier="verifier-b"),
            # Facts §1: at start the verifier sets 3 to START (1) for every row, whatever verifier_id.
            "other-verifier-healthy": self.row("other-verifier-healthy", 1, None, None, verifier="verifier-b"),
            "no-verifier-id": self.row("no-verifier-id", 7, 6, NR, verifier=None),
        }
        expect(v.agents(), self.failed, "rows after the real verifier failed the agents")
        log = v.log()
        for agent in ALL:
            line = "Agent %s was not reachable for quote in %d tries, setting state to FAILED" % (agent, MAX_RETRIES)
            expect(line in log, agent in UNREACHABLE, "verifier log line %r" % line)

    def step2_reset(self, n):
        self.say("step 2: verifier stopped; keylime-reset-failed as ExecStartPre (reset %d of %d)" % (n, MAX_RESETS))
        before = self.v.agents()
        lines = self.reset()
        expect(lines, [self.reset_line(a, n) for a in UNREACHABLE] + [self.summary_line(3, 2, 0)],
               "reset log lines (stderr; the same go to syslog)")
        after = dict(before)
        for agent in UNREACHABLE:
            after[agent] = before[agent][:2] + (3,) + before[agent][3:]
        expect(self.v.agents(), after, "rows after the reset: only operational_state of the unreachable agents")

    def step3_polled_again(self):
        self.say("step 3: verifier restarted; exactly the reset agents are polled again")
        self.listen()                     # still unreachable: each request is read, then dropped
        run = self.start()
        self.wait_failed(UNREACHABLE)
        seen = {agent: listener.seen() for agent, listener in self.listeners.items()}
        self.v.stop()
        expect({a: len(s) for a, s in seen.items()},
               {a: (MAX_RETRIES + 1 if a in UNREACHABLE else 0) for a in ALL},
               "quote requests per agent port (1 + max_retries for each reset agent, none elsewhere)")
        expect(all(quote_request(line) for s in seen.values() for _t, line in s), True,
               "every request is GET /v2.1/quotes/integrity")
        first = {a: round(seen[a][0][0] - run["started"], 2) for a in UNREACHABLE}
        self.figures["start_to_ready"] = round(run["ready"] - run["started"], 2)
        self.figures["start_to_first_quote"] = first
        self.figures["ready_to_first_quote"] = {a: round(seen[a][0][0] - run["ready"], 2) for a in UNREACHABLE}
        expect(self.v.agents(), self.failed, "rows after the restart (unreachable again: back to 7; rest unchanged)")
        log = self.v.log()
        for agent in ALL:
            line = "Agent %s was not reachable for quote in %d tries, setting state to FAILED" % (agent, MAX_RETRIES)
            expect(line in log, agent in UNREACHABLE, "verifier log line %r" % line)

    def step4_agent_answers(self):
        self.say("step 4: reset again; unreachable-1 now answers 403, unreachable-2 answers 500")
        before = self.v.agents()
        expect(self.reset(), [self.reset_line(a, 2) for a in UNREACHABLE] + [self.summary_line(3, 2, 0)],
               "second reset log lines")
        self.listen({"unreachable-1": 403, "unreachable-2": 500})
        self.start()
        self.wait_failed(UNREACHABLE)
        requests = self.requests()
        self.v.stop()
        expect({a: len(r) for a, r in requests.items()},
               {a: {"unreachable-1": 1, "unreachable-2": MAX_RETRIES + 1,
                    "unreachable-3": MAX_RETRIES + 1}.get(a, 0) for a in ALL},
               "quote requests per agent port (403 ends polling at once; 500 is retried)")
        expect(quote_request(requests["unreachable-1"][0]), True, "the 403 stand-in saw a quote request")
        log = self.v.log()
        expect("Unexpected Get Quote response error for cloud agent unreachable-1, Error: 403" in log, True,
               "verifier log: it reached unreachable-1 and got 403")
        after = dict(before)
        after["unreachable-1"] = self.row("unreachable-1", 7, 6, NQ)
        expect(self.v.agents(), after,
               "rows: unreachable-1 now FAILED for no_quote (not connectivity); 500 still counts as not_reachable")
        self.failed = after

    def step5_cap(self):
        self.say("step 5: reset and restart until the cap (%d) is reached" % MAX_RESETS)
        still = ("unreachable-2", "unreachable-3")
        expect(self.reset(), [self.reset_line(a, 3) for a in still] + [self.summary_line(2, 3, 0)],
               "third reset: unreachable-1 is left alone (no_quote)")
        self.listen()
        self.start()
        self.wait_failed(still)
        expect({a: len(r) for a, r in self.requests().items()},
               {a: (MAX_RETRIES + 1 if a in still else 0) for a in ALL}, "quote requests after the third reset")
        self.v.stop()
        expect(self.v.agents(), self.failed, "rows after the third restart")

        lines = self.reset()
        expect(lines, [self.cap_line(a) for a in still] + [self.summary_line(0, 3, 2)],
               "fourth reset: the cap is reached, the agents are left FAILED and the log says why")
        self.figures["cap_lines"] = lines[:2]
        expect(self.v.agents(), self.failed, "rows after the capped reset: nothing written")

        self.listen()
        run = self.start()
        quiet = max(5.0, 3 * max(self.figures["start_to_first_quote"].values()))
        time.sleep(max(0.0, run["started"] + quiet - time.time()))
        requests = self.requests()
        self.v.stop()
        expect({a: len(r) for a, r in requests.items()}, {a: 0 for a in ALL},
               "no agent polled after the capped reset (waited %.1f s from start)" % quiet)
        expect(self.v.agents(), self.failed, "rows after the last restart")
        self.close_listeners()

    def run(self):
        started = time.monotonic()
        try:
            self.step1_verifier_produces_failures()
            self.step2_reset(1)
            self.step3_polled_again()
            self.step4_agent_answers()
            self.step5_cap()
        finally:
            self.v.stop()
            self.close_listeners()
        self.figures["scenario_seconds"] = round(time.monotonic() - started, 1)
        self.figures["reset_seconds"] = [r["seconds"] for r in self.resets]
        return self.report()

    def report(self):
        f = self.figures
        lines = ["real Keylime %s verifier, reboot recovery with keylime-reset-failed" % kv.KEYLIME_VERSION,
                 "  keylime venv ready in %.1f s (cached under %s)" % (f["venv_seconds"], kv.CACHE_DIR),
                 "  verifier start until it answers on its port: %s s" % ", ".join("%.2f" % s for s in f["verifier_starts"]),
                 "  reset runs (ExecStartPre): %s s" % ", ".join("%.2f" % s for s in f["reset_seconds"])]
        lines.append("  reset #1 (after the real verifier failed them):")
        lines += ["    " + l for l in self.resets[0]["stderr"]]
        lines.append("  verifier start -> first quote request on each reset agent (start -> port ready %.2f s):"
                     % f["start_to_ready"])
        lines += ["    %-14s %.2f s (%.2f s after ready)" % (a, s, f["ready_to_first_quote"][a])
                  for a, s in sorted(f["start_to_first_quote"].items())]
        lines.append("  reset #4, cap reached:")
        lines += ["    " + l for l in f["cap_lines"]]
        lines.append("  whole scenario %.1f s" % f["scenario_seconds"])
        return "\n".join(lines)


def main(argv=None):
    """tests/e2e-real-verifier: run the scenario in a temporary directory and print the report."""
    problem = kv.missing_prerequisites()
    if problem:
        print("e2e-real-verifier: cannot run: %s" % problem, file=sys.stderr)
        return 2
    keep = "--keep" in (sys.argv[1:] if argv is None else argv)
    workdir = tempfile.mkdtemp(prefix="krf-real-verifier-")
    try:
        print(Scenario(workdir, say=lambda m: print(m, flush=True)).run())
    except ForeignVerifier as exc:
        print("e2e-real-verifier: %s; stop it and run again" % exc, file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 2
    except AssertionError as exc:
        print("e2e-real-verifier: FAILED: %s\n(verifier logs kept in %s/verifier/logs)" % (exc, workdir),
              file=sys.stderr)
        return 1
    if keep:
        print("  files kept in %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
