"""Bounded OpenBao health check: the certificate renewal's ExecStartPre.

Polls GET <BAO_ADDR>/v1/sys/health until OpenBao answers unsealed, or the time bound passes.
Exit 1 when it stays sealed, uninitialised, failing (5xx) or unreachable, so that renewal never
runs against a sealed vault and the failed run is visible (systemctl --failed, the journal); the
renewal timer tries again later. Settings come from the bao CLI's variables (BAO_ADDR, BAO_CACERT,
BAO_SKIP_VERIFY) and OPENBAO_HEALTH_TIMEOUT, normally set in /etc/keylime-reboot-fix/cert-renewal.conf,
or from the command line.

Exit codes: 0 unsealed, 1 not healthy within the timeout, 64 usage, 78 configuration error.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from . import constants as C
from .errors import EX_CONFIG, EX_NOT_READY, EX_OK, EX_USAGE
from .helper_cli import Parser, positive_float, say

PROG = "openbao-health"
# One request never waits longer than this, so a server that accepts and never answers is retried.
REQUEST_TIMEOUT = 5.0


def health_url(addr):
    """The health endpoint for an OpenBao address; ValueError for anything but http(s)://host."""
    parts = urllib.parse.urlsplit(addr.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("OpenBao address must be http(s)://host[:port], not %r" % addr)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + C.OPENBAO_HEALTH_PATH, "", ""))


def tls_context(cacert=None, insecure=False):
    if insecure:
        return ssl._create_unverified_context()  # the admin asked for it (BAO_SKIP_VERIFY)
    return ssl.create_default_context(cafile=cacert or None)


def probe(url, timeout, context=None):
    """(healthy, description) from one GET of the health endpoint."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            code, body = answer.status, answer.read(65536)
    except urllib.error.HTTPError as exc:
        code, body = exc.code, b""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, "unreachable (%s)" % (reason,)
    if code in C.OPENBAO_UNSEALED_CODES:
        return True, "unsealed (HTTP %d)" % code
    if code == C.OPENBAO_SEALED_CODE:
        return False, "sealed (HTTP %d)" % code
    if code == C.OPENBAO_UNINITIALISED_CODE:
        return False, "not initialised (HTTP %d)" % code
    try:
        sealed = json.loads(body or b"{}").get("sealed")
    except (ValueError, AttributeError):
        sealed = None
    return False, "unhealthy (HTTP %d%s)" % (code, ", sealed" if sealed else "")


def wait_healthy(url, timeout, interval=1.0, context=None, clock=time.monotonic):
    """(healthy, last description, seconds spent); never longer than timeout plus a few ms."""
    start = clock()
    deadline = start + timeout
    description = "not tried"
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return False, description, clock() - start
        healthy, description = probe(url, min(REQUEST_TIMEOUT, remaining), context)
        if healthy:
            return True, description, clock() - start
        time.sleep(max(0.0, min(interval, deadline - clock())))


def _truthy(text):
    return str(text).strip().lower() in ("1", "true", "yes", "on")


def main(argv=None, environ=os.environ):
    parser = Parser(prog=PROG, description="Wait, bounded, until OpenBao answers unsealed on "
                    "/v1/sys/health. Exit 0 unsealed, 1 sealed/failing/unreachable within the "
                    "timeout, 64 usage, 78 configuration error.")
    parser.add_argument("--addr", help="OpenBao address (default $BAO_ADDR, else %s)" % C.DEFAULT_OPENBAO_ADDR)
    parser.add_argument("--timeout", type=positive_float,
                        help="give up after this many seconds (default $OPENBAO_HEALTH_TIMEOUT, else %g)"
                        % C.DEFAULT_OPENBAO_TIMEOUT)
    parser.add_argument("--interval", type=positive_float, default=1.0, help="seconds between attempts")
    parser.add_argument("--cacert", help="CA bundle for https (default $BAO_CACERT, else the system's)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate "
                        "(default $BAO_SKIP_VERIFY)")
    args = parser.parse_args(argv)

    addr = args.addr or environ.get(C.OPENBAO_ADDR_ENV) or C.DEFAULT_OPENBAO_ADDR
    try:
        url = health_url(addr)
    except ValueError as exc:
        say(PROG, ("usage error: " if args.addr else "configuration error: ") + str(exc))
        return EX_USAGE if args.addr else EX_CONFIG
    timeout = args.timeout
    if timeout is None:
        text = environ.get(C.OPENBAO_TIMEOUT_ENV, "") or str(C.DEFAULT_OPENBAO_TIMEOUT)
        try:
            timeout = positive_float(text)
        except Exception:
            say(PROG, "configuration error: %s must be a positive number of seconds, not %r"
                % (C.OPENBAO_TIMEOUT_ENV, text))
            return EX_CONFIG
    cacert = args.cacert or environ.get(C.OPENBAO_CACERT_ENV) or None
    if cacert and not os.path.isfile(cacert):
        say(PROG, "configuration error: CA file %s does not exist" % cacert)
        return EX_CONFIG
    insecure = args.insecure or _truthy(environ.get(C.OPENBAO_SKIP_VERIFY_ENV, ""))
    try:
        context = tls_context(cacert, insecure) if url.startswith("https:") else None
    except (OSError, ssl.SSLError) as exc:
        say(PROG, "configuration error: cannot load CA file %s: %s" % (cacert, exc))
        return EX_CONFIG

    healthy, description, spent = wait_healthy(url, timeout, args.interval, context)
    if healthy:
        say(PROG, "OpenBao at %s is %s after %.1f s" % (addr, description, spent))
        return EX_OK
    say(PROG, "OpenBao at %s not ready after %.1f s: %s; renewal not attempted, existing "
              "certificates stay in use, the timer retries" % (addr, spent, description))
    return EX_NOT_READY


if __name__ == "__main__":
    sys.exit(main())
