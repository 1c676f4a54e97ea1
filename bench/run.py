"""Benchmark: keylime-reset-failed (A) against the write-up's hand-written shell reset (B).

For each fleet size: every run first restores the database from a pristine cached copy (and
fsyncs it, so that no command pays for flushing the copy; see restore()) and gives A a fresh reset-state file;
A and B alternate (AB, BA, AB, ...) on the same file path; each run's wall time is taken here
and its peak resident memory comes from GNU time (the rusage of the command and its own
children, so B's figure is the largest of bash, sqlite3 and logger). After each run the
database is checked against the exact expected result, so a command that did less work cannot
look fast.

A is the real command line as the verifier's ExecStartPre runs it, under Debian's interpreter:
  /usr/bin/python3 bin/keylime-reset-failed --db DB --state-file STATE --force
B is bench/reference-reset.sh DB. Both get stdout on /dev/null and a minimal environment.
F (the floor) is the bare UPDATE of exactly A's rows with the sqlite3 command line: no
interpreter, no count, no log, no reset state, no table. It is what any reset that checks cause
and verifier must pay at least, and shows which ratio targets any implementation can reach.

Usage: python3 bench/run.py [--sizes 10,1000,100000,1000000] [--reps 9] [--reps-large 3]
       (make bench; see --help). Writes bench/results/latest.md and latest.json.
"""

import argparse
import collections
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
for _p in (BENCH, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import make_db  # noqa: E402
import syslog_sink  # noqa: E402
from keylime_reboot_fix import constants as C  # noqa: E402

REFERENCE = os.path.join(BENCH, "reference-reset.sh")
FLOOR_SQL = ("UPDATE {t} SET operational_state = {to} WHERE operational_state = {frm} AND verifier_id = '{uuid}'"
             " AND last_event_id IN ({events})").format(
                 t=C.VERIFIER_TABLE, to=C.RESET_TO, frm=C.RESET_FROM, uuid=C.DEFAULT_VERIFIER_UUID,
                 events=", ".join("'%s'" % e for e in C.CONNECTIVITY_EVENTS))
DEFAULT_SIZES = (10, 1000, 100000, 1000000)
MiB = 1024 * 1024

# (label, check(results) -> (measured text, passed or None when not measured))
TARGET_RATIOS = ((10, 3.0), (100000, 0.5), (1000000, 1.1))
RSS_LIMIT_MIB = 20.0
RSS_AT = 1000000
RSS_GROWTH_FROM = 1000
RSS_GROWTH_MIB = 2.0
STARTUP_AT = 1000
HOST_DEV = "/dev"  # the machine's /dev, still reachable here when /dev is our private tmpfs


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# --- one run ---------------------------------------------------------------------------------

PAGE = 4096
CHUNK = 64 * 1024  # below malloc's mmap threshold: no page faults per chunk


def _rewrite_differences(pristine, work):
    """Make work byte-identical to pristine by rewriting only the 4 KiB blocks that differ.

    A reset changes a few thousand scattered pages of a multi-GB file; copying 4.5 GB for
    every run of the 1,000,000-agent case would take minutes on this shared disk, while
    comparing in memory and rewriting the differing blocks gives the same bytes in seconds.
    Returns the number of blocks rewritten.
    """
    rewritten = 0
    src, dst = os.open(pristine, os.O_RDONLY), os.open(work, os.O_RDWR)
    try:
        offset = 0
        while True:
            want = os.pread(src, CHUNK, offset)
            if not want:
                break
            have = os.pread(dst, len(want), offset)
            if have != want:
                for i in range(0, len(want), PAGE):
                    if have[i:i + PAGE] != want[i:i + PAGE]:
                        os.pwrite(dst, want[i:i + PAGE], offset + i)
                        rewritten += 1
            offset += len(want)
        os.ftruncate(dst, offset)
    finally:
        os.close(src)
        os.close(dst)
    return rewritten


def restore(pristine, work, cold):
    """Put a pristine copy at work, on disk (fsync), and optionally out of the page cache.

    The first restore copies the file; later ones rewrite only what the last run changed (same
    bytes, same result as a copy). Any journal left beside it is removed first.
    """
    for path in (work + "-journal", work + "-wal", work + "-shm"):
        if os.path.exists(path):
            os.unlink(path)
    if os.path.exists(work) and os.path.getsize(work) == os.path.getsize(pristine):
        _rewrite_differences(pristine, work)
    else:
        if os.path.exists(work):
            os.unlink(work)
        shutil.copyfile(pristine, work)
    fd = os.open(work, os.O_RDONLY)
    try:
        os.fsync(fd)
        if cold:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    dfd = os.open(os.path.dirname(work), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def base_env(home):
    # What a systemd service gets, roughly: a fixed PATH, no user's dotfiles (HOME is empty).
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "LANG": "C.UTF-8"}


def command(which, db, state, args, home):
    env = base_env(home)
    if which == "A":
        env["PYTHONPATH"] = args.tree
        # The command as installed: a script that imports the package (no runpy, as -m would add).
        return [args.python, os.path.join(args.tree, "bin", "keylime-reset-failed"), "--db", db,
                "--state-file", state, "--force"], env
    if which == "F":
        return ["sqlite3", db, FLOOR_SQL], env
    return [REFERENCE, db], env


TIME = "/usr/bin/time"


def run_one(argv, env, errpath):
    """(wall seconds, CPU seconds, peak RSS in KiB, exit code) of one command.

    Peak RSS comes from GNU time, not from os.wait4 on a child of this process: Linux keeps a
    forked child's pre-exec high-water mark (this ~20 MiB Python harness) in its ru_maxrss, so
    every command spawned from Python would show at least the harness's size. GNU time is a
    ~2 MiB C program, below anything measured here. Wall time is taken here around the whole
    launch; GNU time's own fork and exec add the same ~1 ms to A and B (see launcher_overhead).
    CPU time (user + system, the command and its children, plus GNU time's own ~1 ms) comes from
    os.wait4 on GNU time: unlike wall time it hardly depends on what else runs on the machine.
    """
    rsspath = errpath + ".rss"
    with open(errpath, "wb") as err:
        # As under systemd, stderr is "the journal" and JOURNAL_STREAM says so: A then sends its
        # lines to syslog only, instead of a second copy to stderr.
        st = os.fstat(err.fileno())
        env = dict(env, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        start = time.perf_counter()
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", rsspath] + argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, close_fds=True,
                                cwd="/")  # as under systemd; python -m would also search the cwd
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(rsspath, encoding="utf-8") as handle:
        lines = handle.read().split()
    return wall, usage.ru_utime + usage.ru_stime, int(lines[-1]), proc.returncode


def launcher_overhead(scratch, runs=20):
    """Median wall time of launching /bin/true through GNU time, as run_one does."""
    walls = [run_one(["/bin/true"], base_env(scratch), os.path.join(scratch, "true.err"))[0]
             for _ in range(runs)]
    return statistics.median(walls)


def expected_groups(groups, which):
    """The (state, event, verifier) -> rows picture after a correct run of A, B or F (F = A's rows)."""
    out = collections.Counter()
    for state, event, verifier, rows in groups:
        if state == C.FAILED and (which == "B" or (
                event in C.CONNECTIVITY_EVENTS and verifier == C.DEFAULT_VERIFIER_UUID)):
            state = C.GET_QUOTE
        out[(state, event, verifier)] += rows
    return out


def check(work, manifest, which):
    """Rows moved from FAILED to GET_QUOTE; raises if the database is not exactly as expected."""
    got = collections.Counter({tuple(g[:3]): g[3] for g in make_db.groups(work)})
    want = expected_groups(manifest["groups"], which)
    if got != want:
        raise AssertionError("%s left the database in an unexpected state:\n got  %s\n want %s"
                             % (which, sorted(got.items(), key=repr), sorted(want.items(), key=repr)))
    before = sum(g[3] for g in manifest["groups"] if g[0] == C.FAILED)
    return before - sum(n for (state, _e, _v), n in got.items() if state == C.FAILED)


def timed(which, pristine, manifest, work, args, scratch):
    restore(pristine, work, args.cache == "cold")
    rundir = tempfile.mkdtemp(prefix="run-", dir=scratch)
    home = os.path.join(rundir, "home")
    os.mkdir(home)
    state = os.path.join(rundir, "state", "reset-state.jsonl")
    os.mkdir(os.path.dirname(state), 0o755)
    argv, env = command(which, work, state, args, home)
    errpath = os.path.join(rundir, "stderr")
    if args.listener:
        args.listener.take()
    wall, cpu, rss_kib, code = run_one(argv, env, errpath)
    lines, last = args.listener.take() if args.listener else (None, [])
    with open(errpath, "rb") as handle:
        stderr = handle.read().decode("utf-8", "replace")
    if code != 0:
        raise RuntimeError("%s exited %d: %s\n%s%s" % (which, code, " ".join(argv), stderr,
                                                         "\n".join(last)))
    resets = check(work, manifest, which) if args.verify else None
    shutil.rmtree(rundir)
    return {"wall": wall, "cpu": cpu, "rss_kib": rss_kib, "resets": resets, "syslog_lines": lines}


# --- one size ----------------------------------------------------------------------------------

def bench_size(n, args, scratch):
    pristine, manifest = make_db.pristine(n, args.cache_dir, log=log)
    work = os.path.join(scratch, "cv_data.sqlite")
    reps = args.reps_large if n >= args.large_from else args.reps
    runs = {w: [] for w in args.commands}
    for which in args.commands:
        for _ in range(args.warmup):
            timed(which, pristine, manifest, work, args, scratch)
    for rep in range(reps):
        order = args.commands if rep % 2 == 0 else args.commands[::-1]
        for which in order:
            runs[which].append(timed(which, pristine, manifest, work, args, scratch))
        log("%9d agents rep %d/%d: %s" % (n, rep + 1, reps, "  ".join(
            "%s %.1f ms (CPU %.1f ms) %.1f MiB" % (w, runs[w][-1]["wall"] * 1e3, runs[w][-1]["cpu"] * 1e3,
                                                  runs[w][-1]["rss_kib"] / 1024)
            for w in args.commands)))
    for path in (work, work + "-journal"):
        if os.path.exists(path):
            os.unlink(path)
    row = {"agents": n, "db_bytes": manifest["bytes"], "reps": reps,
           "expected_resets": manifest["expected_resets"]}
    for which, samples in runs.items():
        walls = [s["wall"] for s in samples]
        rss = [s["rss_kib"] for s in samples]
        cpus = [s["cpu"] for s in samples]
        row[which] = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
                      "cpu_median_s": statistics.median(cpus), "cpu_s": cpus,
                      "walls_s": walls, "peak_rss_mib": max(rss) / 1024.0,
                      "rss_mib": [r / 1024.0 for r in rss],
                      "resets": sorted({s["resets"] for s in samples}, key=repr),
                      "syslog_lines": sorted({s["syslog_lines"] for s in samples}, key=repr)}
    if "F" in runs and "B" in runs:
        row["floor_ratio"] = row["F"]["median_s"] / row["B"]["median_s"]
    if "A" in runs and "B" in runs:
        row["ratio"] = row["A"]["median_s"] / row["B"]["median_s"]
        row["cpu_ratio"] = row["A"]["cpu_median_s"] / row["B"]["cpu_median_s"]
    return row


# --- report --------------------------------------------------------------------------------------

def targets(rows):
    """[(target text, measured text, True/False/None)] for the issue's targets."""
    by_n = {r["agents"]: r for r in rows}
    out = []
    for n, limit in TARGET_RATIOS:
        r = by_n.get(n)
        ok = None if not r or "ratio" not in r else r["ratio"] <= limit
        measured = "%.2f" % r["ratio"] if ok is not None else "not measured"
        if ok is not None and "floor_ratio" in r:
            measured += " (bare UPDATE F/B: %.2f)" % r["floor_ratio"]
        out.append(("A/B wall time <= %.1f at %s agents" % (limit, "{:,}".format(n)), measured, ok))
    r = by_n.get(RSS_AT)
    ok = None if not r or "A" not in r else r["A"]["peak_rss_mib"] < RSS_LIMIT_MIB
    out.append(("A peak RSS < %d MiB at %s agents" % (RSS_LIMIT_MIB, "{:,}".format(RSS_AT)),
                "%.1f MiB" % r["A"]["peak_rss_mib"] if ok is not None else "not measured", ok))
    lo, hi = by_n.get(RSS_GROWTH_FROM), by_n.get(RSS_AT)
    if lo and hi and "A" in lo and "A" in hi:
        growth = hi["A"]["peak_rss_mib"] - lo["A"]["peak_rss_mib"]
        out.append(("A peak RSS growth < %d MiB from %s to %s agents" % (
            RSS_GROWTH_MIB, "{:,}".format(RSS_GROWTH_FROM), "{:,}".format(RSS_AT)),
            "%+.1f MiB" % growth, growth < RSS_GROWTH_MIB))
    else:
        out.append(("A peak RSS growth < %d MiB from %s to %s agents" % (
            RSS_GROWTH_MIB, "{:,}".format(RSS_GROWTH_FROM), "{:,}".format(RSS_AT)), "not measured", None))
    return out


def verdict(ok):
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def render(report):
    rows = report["rows"]
    has = [w for w in ("A", "B") if any(w in r for r in rows)]
    head = ["agents", "DB size", "runs"]
    for w in has:
        head += ["%s median" % w]
    if len(has) == 2:
        head += ["A/B"]
    for w in has:
        head += ["%s CPU" % w]
    if len(has) == 2:
        head += ["A/B CPU"]
    for w in has:
        head += ["%s peak RSS" % w]
    for w in has:
        head += ["%s reset" % w]
    head += ["syslog lines " + "/".join(has)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r in rows:
        cells = ["{:,}".format(r["agents"]), "%.1f MB" % (r["db_bytes"] / 1e6), str(r["reps"])]
        for w in has:
            cells.append("%.1f ms" % (r[w]["median_s"] * 1e3) if w in r else "-")
        if len(has) == 2:
            cells.append("%.2f" % r["ratio"] if "ratio" in r else "-")
        for w in has:
            cells.append("%.1f ms" % (r[w]["cpu_median_s"] * 1e3) if w in r else "-")
        if len(has) == 2:
            cells.append("%.2f" % r["cpu_ratio"] if "cpu_ratio" in r else "-")
        for w in has:
            cells.append("%.1f MiB" % r[w]["peak_rss_mib"] if w in r else "-")
        for w in has:
            cells.append(",".join("{:,}".format(x) for x in r[w]["resets"] if x is not None) or "-"
                         if w in r else "-")
        cells.append("/".join(",".join("{:,}".format(x) for x in r[w]["syslog_lines"] if x is not None) or "-"
                              if w in r else "-" for w in has))
        lines.append("| " + " | ".join(cells) + " |")
    out = ["# Reset benchmark: keylime-reset-failed (A) vs the write-up's shell reset (B)", "",
           "Command: `%s`  " % report["command"],
           "When: %s; commit %s; %s" % (report["when"], report["commit"], report["machine"]),
           "Cache: %s; syslog: %s" % (report["cache"], report["syslog"]), "",
           "\n".join(lines), ""]
    if any("F" in r for r in rows):
        out += ["Floor F, the bare UPDATE of exactly A's rows (`sqlite3 DB \"%s\"`): the least any "
                "reset that checks cause and verifier costs, in the same runs:" % FLOOR_SQL, "",
                "| agents | F median | F/B | A/F | F CPU | F peak RSS | F reset |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if "F" not in r:
                continue
            f = r["F"]
            out.append("| %s | %.1f ms | %s | %s | %.1f ms | %.1f MiB | %s |" % (
                "{:,}".format(r["agents"]), f["median_s"] * 1e3,
                "%.2f" % r["floor_ratio"] if "floor_ratio" in r else "-",
                "%.2f" % (r["A"]["median_s"] / f["median_s"]) if "A" in r else "-",
                f["cpu_median_s"] * 1e3, f["peak_rss_mib"],
                ",".join("{:,}".format(x) for x in f["resets"] if x is not None) or "-"))
        out.append("")
    if report.get("startup_line"):
        out += [report["startup_line"], ""]
    out += ["| target | measured | verdict |", "|---|---:|---|"]
    out += ["| %s | %s | %s |" % (t, m, verdict(ok)) for t, m, ok in report["targets"]]
    out += ["", "A = `%s`; B = `%s`." % (report["a_command"], report["b_command"]),
            "Wall time is the median over the runs (the targets are on wall time); CPU is the median "
            "user+system time of the command and its children (os.wait4), which depends much less "
            "on the load of a shared machine; peak RSS is the largest ru_maxrss of the runs "
            "(for B the largest of bash, sqlite3 and logger), from GNU time. Both include "
            "launching through GNU time: %.1f ms for /bin/true here. \"reset\" is the number of "
            "rows each command moved from state 7 to 3, checked exactly after every run."
            % (report["launcher_overhead_s"] * 1e3), ""]
    return "\n".join(out)


def git_commit():
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    sq = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()
    py = subprocess.run([ARGS_PYTHON[0], "--version"], capture_output=True, text=True).stdout.strip()
    return "%d CPUs, load %s, %s (A), sqlite3 CLI %s" % (
        os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3]), py, sq[0] if sq else "?")


ARGS_PYTHON = ["/usr/bin/python3"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                   help="comma-separated fleet sizes (default %(default)s)")
    p.add_argument("--reps", type=int, default=9, help="timed runs of each command per size (default 9)")
    p.add_argument("--reps-large", type=int, default=3,
                   help="timed runs per command at sizes >= --large-from (default 3)")
    p.add_argument("--large-from", type=int, default=1000000)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first (default 1)")
    p.add_argument("--only", choices=("A", "B", "F"), help="run only one of the commands")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="do not run F, the bare UPDATE (the lower bound for any reset)")
    p.add_argument("--cache", choices=("warm", "cold"), default="warm",
                   help="warm: the restored copy stays in the page cache (default); cold: it is "
                        "dropped from the cache before each run (posix_fadvise DONTNEED), like at boot")
    p.add_argument("--python", default="/usr/bin/python3", help="interpreter for A (Debian's)")
    p.add_argument("--tree", default=ROOT, help="source tree put on A's PYTHONPATH")
    p.add_argument("--cache-dir", default=make_db.CACHE_DIR, help="pristine databases (default %(default)s)")
    p.add_argument("--scratch", help="directory for the working copy (default: a temporary one in --cache-dir)")
    p.add_argument("--out", default=os.path.join(BENCH, "results"), help="where latest.md/.json go")
    p.add_argument("--dev-log", choices=("auto", "private", "host"), default="auto",
                   help="private: run in a mount namespace with a /dev/log socket of our own that "
                        "counts the lines (auto: when root with unshare); host: the machine's /dev/log")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the exact after-run check of the database")
    args = p.parse_args(argv)
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.replace(" ", "").split(",") if s]
    args.commands = [args.only] if args.only else ["A", "B"] + (["F"] if args.floor else [])
    ARGS_PYTHON[0] = args.python
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so that the scratch copy (GBs at 1,000,000 agents) is removed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    args = parse(argv)
    if "A" in args.commands and not os.path.exists(os.path.join(args.tree, "keylime_reboot_fix", "cli.py")):
        log("keylime_reboot_fix/cli.py is not in %s yet: running B only" % args.tree)
        args.commands = ["B"]
    if args.dev_log == "auto":
        args.dev_log = "private" if syslog_sink.possible() else "host"
    if args.dev_log == "private" and not syslog_sink.inside():
        syslog_sink.reexec(os.path.abspath(__file__), argv)
    args.listener = None
    if args.dev_log == "private":
        global HOST_DEV
        HOST_DEV = syslog_sink.private_dev()
        args.listener = syslog_sink.Listener()
        syslog = ("private /dev/log (this machine has %s): a socket in a private mount namespace, "
                  "drained and counted by the harness like a syslog daemon"
                  % ("one, hidden from the runs" if os.path.exists(os.path.join(HOST_DEV, "log"))
                     else "none"))
    elif os.path.exists("/dev/log"):
        syslog = "the host's /dev/log: both commands send their lines to this machine's syslog daemon"
    else:
        syslog = ("no /dev/log: syslog() fails on every call (glibc retries connect each time); "
                  "lines are not counted")
    log(syslog)
    os.makedirs(args.cache_dir, exist_ok=True)
    scratch = args.scratch or tempfile.mkdtemp(prefix="scratch-", dir=args.cache_dir)
    os.makedirs(scratch, exist_ok=True)
    rows = []
    started = time.monotonic()
    overhead = launcher_overhead(scratch)
    try:
        for n in args.sizes:
            rows.append(bench_size(n, args, scratch))
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    by_n = {r["agents"]: r for r in rows}
    report = {
        "command": "python3 bench/run.py " + " ".join(argv) if argv else "python3 bench/run.py",
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(), "machine": machine(), "cache": args.cache, "syslog": syslog,
        "a_command": "%s bin/keylime-reset-failed --db DB --state-file STATE --force" % args.python,
        "b_command": "bench/reference-reset.sh DB",
        "f_command": 'sqlite3 DB "%s"' % FLOOR_SQL,
        "seconds": round(time.monotonic() - started, 1), "rows": rows,
        "launcher_overhead_s": overhead,
        "targets": targets(rows),
    }
    if STARTUP_AT in by_n and "A" in by_n[STARTUP_AT]:
        report["startup_line"] = ("Time added to the verifier's start by the ExecStartPre at %s agents: "
                                  "%.1f ms (A's median, %s cache)" % (
                                      "{:,}".format(STARTUP_AT), by_n[STARTUP_AT]["A"]["median_s"] * 1e3,
                                      args.cache))
    text = render(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    with open(os.path.join(args.out, "latest.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(text)
    for t, m, ok in report["targets"]:
        print("%s: %s (%s)" % (verdict(ok), t, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
