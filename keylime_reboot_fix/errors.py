"""Errors the reset can end with, each bound to its documented sysexits-style exit code.

The CLI turns any of these into one line on stderr and syslog and the exit code below; the
codes are part of the command's interface (see the man page and --help).
"""

EX_OK = 0
EX_USAGE = 64          # bad command line
EX_DATAERR = 65        # database or state file corrupt, or not a Keylime verifier database
EX_NOINPUT = 66        # database cannot be opened or read (not a file, I/O error)
EX_UNAVAILABLE = 69    # refused: the verifier is running (use --force, or stop it)
EX_SOFTWARE = 70       # internal error; nothing was changed
EX_CANTCREAT = 73      # the reset-state file cannot be written
EX_TEMPFAIL = 75       # database locked for longer than the busy timeout
EX_NOPERM = 77         # permission denied, or an unsafe path (symlink, writable by others)
EX_CONFIG = 78         # configuration error (unreadable/invalid config, unsupported database URL)

EXIT_CODES = (
    (EX_OK, "success, including nothing to do and first boot (no database yet)"),
    (EX_USAGE, "usage error on the command line"),
    (EX_DATAERR, "database or reset-state file corrupt, or not a Keylime verifier database"),
    (EX_NOINPUT, "database cannot be opened or read"),
    (EX_UNAVAILABLE, "refused because the verifier is running (see --force)"),
    (EX_SOFTWARE, "internal error; nothing was changed"),
    (EX_CANTCREAT, "the reset-state file cannot be written"),
    (EX_TEMPFAIL, "database locked for longer than the busy timeout"),
    (EX_NOPERM, "permission denied, or unsafe database path (symlink, writable by others)"),
    (EX_CONFIG, "configuration error, or a database URL this host cannot open"),
)


class ResetError(Exception):
    """Base class: a failure with a one-line message and an exit code; nothing was changed."""

    exit_code = EX_SOFTWARE


class ConfigError(ResetError):
    exit_code = EX_CONFIG


class DatabaseCorrupt(ResetError):
    exit_code = EX_DATAERR


class DatabaseUnreadable(ResetError):
    exit_code = EX_NOINPUT


class VerifierRunning(ResetError):
    exit_code = EX_UNAVAILABLE


class StateFileUnwritable(ResetError):
    exit_code = EX_CANTCREAT


class DatabaseLocked(ResetError):
    exit_code = EX_TEMPFAIL


class PermissionProblem(ResetError):
    exit_code = EX_NOPERM


class StateFileCorrupt(ResetError):
    exit_code = EX_DATAERR


# The systemd helpers (wait-agent-port, openbao-health, cert-renewal) use EX_OK, EX_USAGE,
# EX_CONFIG and this one: the awaited service did not become ready within the time bound.
EX_NOT_READY = 1
# cert-renewal --check (ExecCondition=): 1 to 254 skips the unit cleanly, 255 fails it.
EX_CONDITION_SKIP = 1
EX_CONDITION_FAIL = 255
