"""Where A's time and memory go, at one fleet size: the tool behind the notes in docs/bench.md.

Runs A (python3 -m keylime_reboot_fix --db DB --state-file STATE --force, Debian's python3) on a
freshly restored copy of the cached benchmark database several ways:
  - the bare interpreter start-up (python3 -c pass, and with A's imports) for comparison;
  - -X importtime: the slowest imports of A;
  - cProfile: the functions that take the time (top entries by cumulative time);
  - in-process with sqlite3 statement tracing: every SQL statement A runs, each with its
    EXPLAIN QUERY PLAN, and tracemalloc's peak of Python-level allocations;
  - GNU time: wall, user/sys CPU, peak RSS, page faults, file-system inputs/outputs.

Usage: python3 bench/profile_a.py [AGENTS] [--python /usr/bin/python3]   (default 100000)
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
for _p in (BENCH, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import make_db  # noqa: E402
import run as bench_run  # noqa: E402

# Runs A in-process: traces every SQL statement and measures Python-level allocation peaks.
INPROC = r'''
import json, re, runpy, sqlite3, sys, time, tracemalloc
statements = {}  # shape -> [count, first concrete statement]; bounded, unlike a list of all
LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
def trace(stmt):
    shape = LITERAL.sub("?", " ".join(stmt.split()))
    entry = statements.get(shape)
    if entry is None:
        statements[shape] = [1, stmt]
    else:
        entry[0] += 1
_connect = sqlite3.connect
def connect(*a, **k):
    conn = _connect(*a, **k)
    conn.set_trace_callback(trace)
    return conn
sqlite3.connect = connect
tracemalloc.start()
sys.argv = ["keylime-reset-failed"] + sys.argv[1:]
start = time.perf_counter()
code = 0
try:
    runpy.run_module("keylime_reboot_fix", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
wall = time.perf_counter() - start
cur, peak = tracemalloc.get_traced_memory()
print("\x1ePROFILE" + json.dumps({"statements": statements, "tracemalloc_peak": peak,
                                  "exit": code, "wall": wall}), file=sys.stderr)
'''


# Runs A in-process with every function of the package wrapped: inclusive wall time and growth of
# the process's peak RSS (VmHWM, so SQLite's own memory too) during each call.
PHASES = r'''
import collections, functools, importlib, inspect, json, os, pkgutil, sys, time
import keylime_reboot_fix
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
acc = {}
def wrap(name, fn):
    @functools.wraps(fn)
    def w(*a, **k):
        t, h = time.perf_counter(), hwm()
        try:
            return fn(*a, **k)
        finally:
            e = acc.setdefault(name, [0, 0.0, 0])
            e[0] += 1; e[1] += time.perf_counter() - t; e[2] += hwm() - h
    return w
for info in pkgutil.iter_modules(keylime_reboot_fix.__path__):
    if info.name == "__main__":
        continue
    mod = importlib.import_module("keylime_reboot_fix." + info.name)
    for n, obj in list(vars(mod).items()):
        if inspect.isfunction(obj) and obj.__module__ == mod.__name__ and n != "main":
            setattr(mod, n, wrap(info.name + "." + n, obj))
        elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
            for mn, mo in list(vars(obj).items()):
                if inspect.isfunction(mo):
                    setattr(obj, mn, wrap("%s.%s.%s" % (info.name, n, mn), mo))
from keylime_reboot_fix import cli
start_hwm, t = hwm(), time.perf_counter()
code = cli.main(sys.argv[1:])
print("\x1ePHASES" + json.dumps({"acc": acc, "start_hwm": start_hwm, "end_hwm": hwm(), "exit": code,
                                  "wall": time.perf_counter() - t}), file=sys.stderr)
'''


def sh(argv, env, **kw):
    return subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, **kw)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("agents", nargs="?", type=int, default=100000)
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--tree", default=ROOT)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    pristine, manifest = make_db.pristine(args.agents, log=bench_run.log)
    scratch = tempfile.mkdtemp(prefix="profile-", dir=make_db.CACHE_DIR)
    work = os.path.join(scratch, "cv_data.sqlite")
    env = bench_run.base_env(scratch)
    env["PYTHONPATH"] = args.tree

    def fresh():
        bench_run.restore(pristine, work, cold=False)
        state = os.path.join(scratch, "state.jsonl")
        if os.path.exists(state):
            os.unlink(state)
        return ["--db", work, "--state-file", state, "--force"]

    out = ["# Profile of A at %s agents (%s)" % ("{:,}".format(args.agents), args.python), ""]

    # 1. start-up baselines and the full command under GNU time
    fmt = "wall %e s, user %U s, sys %S s, peak RSS %M KiB, minor faults %R, major %F, fs in %I, fs out %O"
    for label, cmd in (("python3 -c pass", [args.python, "-c", "pass"]),
                       ("python3 -S -c pass", [args.python, "-S", "-c", "pass"]),
                       ("python3 -c 'import sqlite3, syslog, argparse, json'",
                        [args.python, "-c", "import sqlite3, syslog, argparse, json"])):
        r = sh([bench_run.TIME, "-f", fmt, "--"] + cmd, env)
        out.append("- %s: %s" % (label, r.stderr.strip().splitlines()[-1]))
    r = sh([bench_run.TIME, "-f", fmt, "--", args.python, "-m", "keylime_reboot_fix"] + fresh(), env)
    out.append("- A: %s" % r.stderr.strip().splitlines()[-1])
    r = sh([bench_run.TIME, "-f", fmt, "--", bench_run.REFERENCE, fresh()[1]], env)
    out.append("- B (reference-reset.sh, for comparison): %s" % r.stderr.strip().splitlines()[-1])
    out.append("(fs in/out are 512-byte blocks)")
    out.append("")

    # 2. imports
    r = sh([args.python, "-X", "importtime", "-m", "keylime_reboot_fix"] + fresh(), env)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)), m.group(4)))
    top_level = [x for x in rows if x[2] <= 1]
    out.append("## -X importtime: top-level imports, cumulative microseconds (total %d us)"
               % sum(x[0] for x in top_level))
    out += ["    %8d  %s" % (x[0], x[3]) for x in sorted(top_level, reverse=True)[:15]]
    out.append("")

    # 3. cProfile
    r = sh([args.python, "-m", "cProfile", "-s", "cumulative", "-m", "keylime_reboot_fix"] + fresh(), env)
    lines = r.stdout.splitlines()
    start = next((i for i, l in enumerate(lines) if "ncalls" in l), None)
    out.append("## cProfile, by cumulative time")
    if start is not None:
        out += ["    " + l for l in lines[start - 2:start + 1 + args.top]]
    out.append("")

    # 4. statements, plans, Python allocations
    r = sh([args.python, "-c", INPROC] + fresh(), env)
    marker = r.stderr.rfind("\x1ePROFILE")
    import json
    data = json.loads(r.stderr[marker + len("\x1ePROFILE"):]) if marker >= 0 else None
    if data:
        out.append("## SQL statements run by A (%d), with EXPLAIN QUERY PLAN"
                   % sum(c for c, _ in data["statements"].values()))
        import sqlite3
        conn = sqlite3.connect("file:%s?mode=ro" % pristine, uri=True)
        groups = data["statements"]
        for _count, stmt in groups.values():
            if re.match(r"\s*CREATE\s+TEMP", stmt, re.I):
                try:
                    conn.execute(stmt)  # so that the plans of statements on temp tables can be shown
                except sqlite3.Error:
                    pass
        for shape, (count, example) in groups.items():
            out.append("- x%d `%s`" % (count, shape[:300]))
            if re.match(r"\s*(SELECT|UPDATE|DELETE|WITH|INSERT)", example, re.I):
                try:
                    for row in conn.execute("EXPLAIN QUERY PLAN " + example):
                        out.append("    - plan: %s" % row[-1])
                except sqlite3.Error as exc:
                    out.append("    - plan: (%s)" % exc)
        conn.close()
        out.append("")
        out.append("tracemalloc peak of Python-level allocations (SQLite's own memory is not traced): %.2f MiB (exit %s, %.1f ms in-process)"
                   % (data["tracemalloc_peak"] / 1048576, data["exit"], data["wall"] * 1e3))
    else:
        out.append("in-process run failed: %s" % r.stderr[-2000:])
    # 5. per function: inclusive time and peak-RSS growth
    r = sh([args.python, "-c", PHASES] + fresh(), dict(env, JOURNAL_STREAM="0:0"))
    marker = r.stderr.rfind("\x1ePHASES")
    if marker >= 0:
        ph = json.loads(r.stderr[marker + len("\x1ePHASES"):])
        out.append("")
        out.append("## Per function (inclusive; nested calls count in both): peak RSS %.1f MiB when "
                   "main() starts, %.1f MiB at the end" % (ph["start_hwm"] / 1024, ph["end_hwm"] / 1024))
        out.append("    %-55s %8s %10s %12s" % ("function", "calls", "time", "VmHWM growth"))
        ranked = sorted(ph["acc"].items(), key=lambda kv: (-kv[1][2], -kv[1][1]))
        for name, (calls, secs, grow) in ranked[:args.top]:
            if grow <= 0 and secs < 0.005:
                continue
            out.append("    %-55s %8d %8.1f ms %9.1f MiB" % (name, calls, secs * 1e3, grow / 1024))
    else:
        out.append("per-function run failed: %s" % r.stderr[-2000:])
    subprocess.run(["rm", "-rf", scratch])
    print("\n".join(out))


if __name__ == "__main__":
    main()
