"""The reset run: find the database, check it is safe to touch, decide, write, report.

Knows neither argparse nor SQL: options come in as a ResetOptions, SQL stays in the stores
(sqlite_store, standard library; sqlalchemy_store for a fleet's shared PostgreSQL or MySQL/MariaDB
database, imported only then), the decision in verdicts. Any ResetError leaves the database and
the reset-state file as they were (the transaction is rolled back; the state file is replaced
only just before the commit).
"""

import os

from . import constants as C
from . import database_url, db_path, reset_state, verifier_config
from . import verdicts as V
from .errors import ResetError, VerifierRunning
from .report import shown
from .running_verifier import running_verifiers
from .sqlite_store import SqliteVerifierDb

LEFT_ALONE = (V.OTHER_CAUSE, V.OTHER_VERIFIER, V.NO_VERIFIER, V.CAP_REACHED)


class ResetOptions:
    """Everything a run can be told; the defaults are the boot-time ExecStartPre run."""

    def __init__(self, db=None, config_file=None, dry_run=False, any_cause=False, force=False,
                 max_resets=C.DEFAULT_MAX_RESETS, state_file=C.STATE_FILE,
                 busy_timeout=C.DEFAULT_BUSY_TIMEOUT):
        self.db = db
        self.config_file = config_file
        self.dry_run = dry_run
        self.any_cause = any_cause
        self.force = force
        self.max_resets = max_resets
        self.state_file = state_file
        self.busy_timeout = busy_timeout


def _classified(rows, rule):
    """Verdict rows from failed_rows(); whatever a store adds after the nine fields (its own key
    for the row) is passed back to it unread."""
    for row in rows:
        agent_id, verifier_id, ip, port, event, severity, count, last, previous = row[:9]
        verdict, resets = rule.classify(verifier_id, event, count, last, previous)
        yield (agent_id, verifier_id, ip, port, event, severity, count, last, verdict, resets) + row[9:]


def _summary(counts, rule, path, dry_run):
    left = ", ".join("%d %s" % (counts[v], v.replace("-", " ")) for v in LEFT_ALONE)
    return "%s%d agent(s) of verifier '%s' from FAILED (%d) to GET_QUOTE (%d) in %s; left alone: %s" % (
        "dry run: would reset " if dry_run else "reset ", counts[V.RESET], rule.uuid,
        C.RESET_FROM, C.RESET_TO, path, left)


def run(options, log, report, environ=None, proc_root="/proc"):
    """Do one reset run; returns the verdict counts. Raises ResetError on failure."""
    environ = os.environ if environ is None else environ
    config = verifier_config.load(environ, options.config_file)
    sqlite = bool(options.db) or database_url.is_sqlite(config.database_url)
    if sqlite:
        path = os.path.abspath(options.db) if options.db else database_url.sqlite_path(
            config.database_url, config.keylime_dir)
    else:
        url = database_url.server_url(config.database_url)
        path = database_url.masked(url)  # shown everywhere instead of the URL: no password
    rule = V.Rule(config.uuid, options.any_cause, options.max_resets)
    counts = dict.fromkeys((V.RESET,) + LEFT_ALONE, 0)
    context = {"database": path, "verifier_uuid": rule.uuid, "dry_run": options.dry_run,
               "any_cause": options.any_cause, "max_resets": rule.max_resets,
               "configuration": config.describe()}

    if sqlite:
        st = db_path.check(path)
        if st is None:
            return _first_boot(log, report, context, counts, "no verifier database at %s yet" % path)
        owner = st if st.st_uid != 0 else None
    else:
        # A shared database has no local owner; the verifier's user owns the state directory
        # (systemd's StateDirectory=), and is who a socket URL's peer authentication expects.
        owner = reset_state.dir_owner(options.state_file)
    if os.geteuid() == 0 and owner is not None:
        if not options.dry_run:
            reset_state.prepare_dir(options.state_file, owner.st_uid, owner.st_gid)
        db_path.become(owner.st_uid, owner.st_gid)
    if not options.dry_run and not options.force:
        pids = running_verifiers(proc_root)
        if pids:
            raise VerifierRunning(
                "refusing to write: keylime_verifier is running (pid %s); a reset under a running "
                "verifier leaves rows that no verifier polls. Stop it, or use --dry-run or --force"
                % ", ".join(map(str, pids)))
    if sqlite:
        db_path.require_access(path, write=not options.dry_run)
        store = SqliteVerifierDb(path, write=not options.dry_run, busy_timeout=options.busy_timeout)
    else:
        from .sqlalchemy_store import SqlAlchemyVerifierDb  # only here: SQLite needs no SQLAlchemy
        store = SqlAlchemyVerifierDb(url, write=not options.dry_run, busy_timeout=options.busy_timeout,
                                     uuid=rule.uuid)
    try:
        if not store.has_verifier_table():
            return _first_boot(log, report, context, counts,
                               "verifier database %s has no %s table yet" % (path, C.VERIFIER_TABLE))
        store.check_columns()
        if options.any_cause:
            log.warning("--any-cause: resetting FAILED agents of verifier '%s' whatever their "
                        "last_event_id (INVALID_QUOTE and TENANT_FAILED are still never touched)" % rule.uuid)
        store.begin()
        store.load_reset_state(reset_state.read_entries(options.state_file), options.state_file)
        store.record_verdicts(_classified(store.failed_rows(), rule))
        counts = store.count_verdicts(tuple(counts))
        if not options.dry_run and counts[V.RESET]:
            updated = store.reset(V.RESET, rule.uuid, rule.events)
            if updated != counts[V.RESET]:
                raise ResetError("updated %d rows where %d were selected; rolled back, nothing changed"
                                 % (updated, counts[V.RESET]))
            replaced = reset_state.write_entries(options.state_file, store.new_reset_state(V.RESET))
            try:
                store.commit()
            except ResetError:
                # A failed SQLite COMMIT (a reader still holding its lock past the busy timeout,
                # an I/O error) changed nothing: the state must not count these resets. A server
                # that fails its COMMIT may still have committed, so there the count stays (the
                # safe side: the cap comes one reset early, never late).
                if store.failed_commit_changes_nothing:
                    replaced.restore()
                raise
            replaced.discard()
        _report(store, log, report, context, counts, rule, path)
        return counts
    finally:
        store.rollback()
        store.close()


def _first_boot(log, report, context, counts, why):
    log.info("%s (first boot?): nothing to reset" % why)
    report.begin(context)
    report.end(counts)
    return counts


class _Stdout:
    """The report, unless its reader went away: the log must go on either way (an audit trail)."""

    def __init__(self, report, log):
        self.report, self.log, self.broken = report, log, False

    def __call__(self, method, *args):
        if self.broken:
            return
        try:
            getattr(self.report, method)(*args)
        except BrokenPipeError:
            self.broken = True
            self.log.warning("standard output was closed; the table is incomplete, the log is not")


def _report(store, log, report, context, counts, rule, path):
    dry_run = context["dry_run"]
    out = _Stdout(report, log)
    out("begin", context)
    for row in store.verdict_rows():
        out("row", row)
        if dry_run:
            continue
        agent_id, _vid, ip, port, event, _sev, _count, _last, verdict, resets = row
        agent_id, ip, event = shown(agent_id), shown(ip), shown(event)
        if verdict == V.RESET:
            log.info("reset agent %s (%s:%s, %s) from FAILED (%d) to GET_QUOTE (%d): reset %d of %d "
                     "without attestation" % (agent_id, ip, port, event, C.RESET_FROM, C.RESET_TO,
                                              resets, rule.max_resets))
        elif verdict == V.CAP_REACHED:
            log.warning("agent %s left FAILED: reset %d times without a successful attestation since "
                        "(max %d); check the agent host, then reactivate it with "
                        "'keylime_tenant -c reactivate -u %s'" % (agent_id, resets, rule.max_resets, agent_id))
    out("end", counts)
    log.info(_summary(counts, rule, path, dry_run))
