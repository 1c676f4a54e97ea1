"""Runs the site's certificate renewal command, or skips cleanly where none is configured.

The renewal itself is site-specific (the write-up's site renews the agent's certificates from
OpenBao); the admin names the command in CERT_RENEWAL_COMMAND in
/etc/keylime-reboot-fix/cert-renewal.conf, which keylime-cert-renewal.service reads as its
EnvironmentFile. The command line is split like a shell would split it (quotes, backslashes) but
run without a shell; write `/bin/sh -c '...'` to get one.

`--check` is the unit's ExecCondition=: exit 0 when a command is configured, 1 when none is (systemd
then skips the unit without marking it failed), 255 when it is configured but cannot run (the
unit fails, visibly). Without --check: the renewal command's own exit code (128+N when killed by
signal N), 0 when none is configured, 78 when the configured command cannot run, 64 usage.
"""

import os
import shlex
import shutil
import subprocess
import sys

from . import constants as C
from .errors import EX_CONDITION_FAIL, EX_CONDITION_SKIP, EX_CONFIG, EX_OK
from .helper_cli import Parser, say

PROG = "cert-renewal"


class NotRunnable(Exception):
    """A renewal command is configured but cannot be run as written."""


def configured_command(environ=os.environ):
    """The renewal argv, or None when none is configured; NotRunnable when it cannot run."""
    text = environ.get(C.CERT_RENEWAL_COMMAND_ENV, "").strip()
    if not text:
        return None
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise NotRunnable("%s=%r cannot be parsed: %s" % (C.CERT_RENEWAL_COMMAND_ENV, text, exc)) from None
    if not argv:
        return None
    program = argv[0]
    if "/" in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise NotRunnable("renewal command %s is not an executable file" % program)
    elif shutil.which(program, path=environ.get("PATH", os.defpath)) is None:
        raise NotRunnable("renewal command %s not found in PATH" % program)
    return argv


def main(argv=None, environ=os.environ):
    parser = Parser(prog=PROG, description="Run the certificate renewal command configured in %s "
                    "(%s), or skip cleanly when none is." % (C.CERT_RENEWAL_CONFIG, C.CERT_RENEWAL_COMMAND_ENV))
    parser.add_argument("--check", action="store_true", help="only say whether renewal is configured "
                        "(ExecCondition=: 0 yes, 1 none configured, 255 configured but not runnable)")
    args = parser.parse_args(argv)
    try:
        command = configured_command(environ)
    except NotRunnable as exc:
        say(PROG, "configuration error: %s (%s)" % (exc, C.CERT_RENEWAL_CONFIG))
        return EX_CONDITION_FAIL if args.check else EX_CONFIG
    if command is None:
        say(PROG, "no certificate renewal configured on this host (set %s in %s); skipping"
            % (C.CERT_RENEWAL_COMMAND_ENV, C.CERT_RENEWAL_CONFIG))
        return EX_CONDITION_SKIP if args.check else EX_OK
    if args.check:
        return EX_OK
    say(PROG, "running renewal command: %s" % " ".join(shlex.quote(a) for a in command))
    sys.stdout.flush()
    result = subprocess.run(command, stdin=subprocess.DEVNULL, check=False)
    code = result.returncode if result.returncode >= 0 else 128 - result.returncode
    say(PROG, "renewal command %s (exit %d)" % ("succeeded" if code == 0 else "FAILED", code))
    return code


if __name__ == "__main__":
    sys.exit(main())
