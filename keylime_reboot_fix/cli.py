"""Command line of keylime-reset-failed: options in, exit code out. No SQL here.

It runs at every boot, so the usual command lines (the ExecStartPre's, an admin's) are read by a
small parser of its own; argparse (and the regular-expression engine it pulls in) is loaded only
for --help, --version and mistakes, and its messages are the ones users see.
"""

import math
import sys

from . import __version__
from . import constants as C
from .errors import EX_OK, EX_SOFTWARE, EX_USAGE, EXIT_CODES, ResetError

DESCRIPTION = """\
Before the Keylime verifier starts, move agents that it marked FAILED (operational_state 7)
because they were unreachable (last_event_id internal.verifier.not_reachable or
internal.verifier.not_reachable_v) back to GET_QUOTE (3), so that the verifier polls them again.
Only rows of this verifier (verifier_id = its [verifier] uuid) are touched, all in one
transaction, each logged to syslog (journalctl -t keylime-reset-failed). INVALID_QUOTE (9),
TENANT_FAILED (10) and FAILED for any other cause are never modified. An agent reset
--max-resets times without a successful attestation in between is left FAILED.

The database is found as the verifier finds it: KEYLIME_VERIFIER_CONFIG, else
/etc/keylime/verifier.conf (or /usr/etc/keylime/verifier.conf) and its verifier.conf.d
snippets, then KEYLIME_VERIFIER_DATABASE_URL / KEYLIME_VERIFIER_UUID, KEYLIME_DIR. A fleet's
shared PostgreSQL or MySQL/MariaDB database_url is opened through SQLAlchemy (python3-sqlalchemy
and the URL's driver must be installed); --db names an SQLite file only."""


def _exit_codes_text():
    return "exit codes:\n" + "\n".join("  %-3d %s" % (code, text) for code, text in EXIT_CODES)


class BadValue(ValueError):
    """An option value out of range; the message is what the user sees."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise BadValue("not a whole number: %r" % text)
    if value < 1:
        raise BadValue("must be at least 1: %r" % text)
    return value


def _path(text):
    if not text:
        raise BadValue("must not be empty")
    return text


def _timeout(text):
    try:
        value = float(text)
    except ValueError:
        raise BadValue("not a number of seconds: %r" % text)
    if not math.isfinite(value) or value < 0 or value > 300:
        raise BadValue("must be between 0 and 300 seconds: %r" % text)
    return value


# Options taking a value: (converter, default). Flags default to False. The one list both
# parsers are built from.
VALUE_OPTIONS = {
    "db": (_path, None),
    "config": (_path, None),
    "max-resets": (_positive_int, C.DEFAULT_MAX_RESETS),
    "state-file": (_path, C.STATE_FILE),
    "busy-timeout": (_timeout, C.DEFAULT_BUSY_TIMEOUT),
}
FLAGS = ("dry-run", "json", "any-cause", "force")


class Options:
    """Parsed options, under argparse's attribute names (dry_run, max_resets, ...)."""

    def __init__(self, **values):
        self.__dict__.update(values)


def fast_parse(argv):
    """Options for a well-formed command line without --help/--version; None for anything else.

    Long options only, `--name value` or `--name=value`, unique prefixes accepted, as argparse
    does. Not getopt: its import alone loads gettext and the re module.
    """
    names = list(VALUE_OPTIONS) + list(FLAGS)
    values = {o.replace("-", "_"): default for o, (_conv, default) in VALUE_OPTIONS.items()}
    values.update((f.replace("-", "_"), False) for f in FLAGS)
    position = 0
    while position < len(argv):
        arg = argv[position]
        position += 1
        given, has_value, text = arg[2:].partition("=")
        if not arg.startswith("--") or not given:
            return None
        matches = [n for n in names if n == given] or [n for n in names if n.startswith(given)]
        if len(matches) != 1:
            return None
        name = matches[0]
        if name in FLAGS:
            if has_value:
                return None
            values[name.replace("-", "_")] = True
            continue
        if not has_value:
            if position == len(argv):
                return None
            text = argv[position]
            position += 1
        if text.startswith("-"):
            return None  # "--state-file --dry-run": argparse refuses it; so do we, in its words
        try:
            values[name.replace("-", "_")] = VALUE_OPTIONS[name][0](text)
        except BadValue:
            return None  # argparse says it, in its words
    return Options(**values)


def _argparse_type(convert):
    import argparse

    def checked(text):
        try:
            return convert(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc))
    checked.__name__ = convert.__name__
    return checked


def build_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            self.exit(EX_USAGE, "%s: error: %s (see --help)\n" % (self.prog, message))

    parser = Parser(prog=C.PROGRAM, description=DESCRIPTION, epilog=_exit_codes_text(),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", metavar="PATH", type=_argparse_type(_path),
                        help="the verifier's SQLite database file (default: from the verifier configuration)")
    parser.add_argument("--config", metavar="FILE", type=_argparse_type(_path),
                        help="read this verifier configuration file only, instead of the search")
    parser.add_argument("--dry-run", action="store_true",
                        help="open the database read-only and show what would be reset, and why not")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of a table (on an error: nothing on "
                             "stdout, the one-line error on stderr and the exit code)")
    parser.add_argument("--any-cause", action="store_true",
                        help="reset FAILED agents of this verifier whatever their last_event_id "
                             "(logged as a warning; 9 and 10 are never touched)")
    parser.add_argument("--force", action="store_true",
                        help="write even though a keylime_verifier process is running")
    parser.add_argument("--max-resets", metavar="N", type=_argparse_type(_positive_int), default=C.DEFAULT_MAX_RESETS,
                        help="leave an agent FAILED after N resets without a successful attestation "
                             "(default %(default)s)")
    parser.add_argument("--state-file", metavar="PATH", type=_argparse_type(_path), default=C.STATE_FILE,
                        help="where the reset counts are kept (default %(default)s)")
    parser.add_argument("--busy-timeout", metavar="SECONDS", type=_argparse_type(_timeout), default=C.DEFAULT_BUSY_TIMEOUT,
                        help="how long to wait for a locked database (default %(default)s)")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return parser


def main(argv=None, stdout=None, stderr=None, syslog_sink=None, environ=None, proc_root="/proc"):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = fast_parse(argv) or build_parser().parse_args(argv)
    from .event_log import EventLog
    from .reset import ResetOptions, run
    from .report import JsonReport, TableReport

    stdout = stdout if stdout is not None else sys.stdout
    log = EventLog(stderr=stderr, syslog_sink=syslog_sink, environ=environ)
    options = ResetOptions(db=args.db, config_file=args.config, dry_run=args.dry_run,
                           any_cause=args.any_cause, force=args.force, max_resets=args.max_resets,
                           state_file=args.state_file, busy_timeout=args.busy_timeout)
    report = JsonReport(stdout) if args.json else TableReport(stdout)
    try:
        run(options, log, report, environ=environ, proc_root=proc_root)
    except ResetError as exc:
        log.error(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        return EX_OK  # the reader went away after the run was done; nothing to undo
    except Exception as exc:  # pragma: no cover - the last line of defence, tested via a forced fault
        log.error("internal error, nothing was changed: %s: %s" % (type(exc).__name__, exc))
        return EX_SOFTWARE
    return EX_OK
