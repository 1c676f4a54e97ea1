"""Loud, exact logging: every line to syslog (identifier keylime-reset-failed) and to stderr.

`journalctl -t keylime-reset-failed` finds the syslog copy. When stderr is itself the journal
(systemd sets JOURNAL_STREAM to its device:inode, as for an ExecStartPre), the stderr copy is
left out so that each line lands in the journal once.
"""

import os
import sys

from . import constants as C
from .report import shown

INFO, WARNING, ERROR = "info", "warning", "error"


def stderr_is_journal(environ, stream):
    value = environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return value == "%d:%d" % (st.st_dev, st.st_ino)


class SyslogSink:
    """The real syslog, opened lazily with the package's identifier."""

    def __init__(self):
        import syslog  # only when a line is logged: nothing to import on --help
        self._syslog = syslog
        syslog.openlog(C.SYSLOG_IDENT, syslog.LOG_PID, syslog.LOG_DAEMON)
        self._priority = {INFO: syslog.LOG_INFO, WARNING: syslog.LOG_WARNING, ERROR: syslog.LOG_ERR}

    def __call__(self, level, message):
        self._syslog.syslog(self._priority[level], message)


class EventLog:
    """Writes each line to the syslog sink and, unless it is the journal already, to stderr."""

    def __init__(self, stderr=None, syslog_sink=None, environ=None):
        self.stderr = stderr if stderr is not None else sys.stderr
        self._sink = syslog_sink
        environ = os.environ if environ is None else environ
        self.echo = not stderr_is_journal(environ, self.stderr)

    def _emit(self, level, message):
        # One event, one line, whatever a message quotes (an error text can carry a database
        # value): control characters are escaped here, where every line passes.
        message = shown(message)
        if self._sink is None:
            self._sink = SyslogSink()
        self._sink(level, message)
        if self.echo:
            prefix = "" if level == INFO else level + ": "
            self.stderr.write("%s: %s%s\n" % (C.PROGRAM, prefix, message))
            self.stderr.flush()

    def info(self, message):
        self._emit(INFO, message)

    def warning(self, message):
        self._emit(WARNING, message)

    def error(self, message):
        self._emit(ERROR, message)
