"""Wait, bounded, until the local Keylime agent accepts TCP connections on its configured port.

Runs as the agent unit's ExecStartPost: systemd then reports the agent "started" only once it
really listens, so a verifier ordered after the agent does not poll a port that is not open yet
(the write-up's 71-second race). The port is found as the agent finds it: [agent] port in
KEYLIME_AGENT_CONFIG or /etc/keylime/agent.conf (or /usr/etc/...), then the agent.conf.d
snippets, then the KEYLIME_AGENT_PORT environment variable; default 9002. The file is rust-keylime's
TOML or the old Python agent's INI; only simple `key = value` lines of [agent] are read.

Exit codes: 0 listening, 1 not listening within --timeout, 64 usage, 78 configuration error.
"""

import os
import re
import socket
import sys
import time

from . import constants as C
from .errors import EX_CONFIG, EX_NOT_READY, EX_OK
from .helper_cli import Parser, port_number, positive_float, say

PROG = "wait-agent-port"

_SECTION = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_OPTION = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*[=:]\s*(.*?)\s*$")


class ConfigProblem(Exception):
    """A configuration file that exists but cannot be read, or a value that is not valid."""


def _unquote(value):
    value = value.strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        return value[1:end] if end > 0 else value[1:]
    return re.sub(r"\s+[#;].*$", "", value).strip()


def read_agent_options(path, wanted=("port", "ip")):
    """{option: value} for the wanted options of [agent] in one file (TOML or INI)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigProblem("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    found, section = {}, None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            continue
        option = _OPTION.match(line)
        if section == C.AGENT_SECTION and option and option.group(1) in wanted:
            found[option.group(1)] = _unquote(option.group(2))
    return found


def config_files(environ):
    """The agent configuration files in the order they apply (the last value wins)."""
    explicit = environ.get(C.AGENT_CONFIG_ENV)
    if explicit and os.path.isfile(explicit):
        return [explicit]
    base = next((p for p in C.AGENT_BASE_CONFIGS if os.path.isfile(p)), None)
    if base is None:
        return []
    files = [base]
    for directory in C.AGENT_SNIPPET_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        files += [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]
    return files


def agent_address(environ=os.environ, files=None):
    """(host to connect to, port, where the port came from) as the agent would configure them."""
    options, origin = {}, "default"
    for path in config_files(environ) if files is None else files:
        values = read_agent_options(path)
        if "port" in values:
            origin = path
        options.update(values)
    env_port = environ.get(C.AGENT_OPTION_ENV_PREFIX + "PORT")
    if env_port:
        options["port"], origin = env_port, C.AGENT_OPTION_ENV_PREFIX + "PORT"
    if environ.get(C.AGENT_OPTION_ENV_PREFIX + "IP"):
        options["ip"] = environ[C.AGENT_OPTION_ENV_PREFIX + "IP"]
    try:
        port = port_number(options.get("port", C.DEFAULT_AGENT_PORT))
    except Exception:
        raise ConfigProblem("invalid agent port %r in %s" % (options.get("port"), origin)) from None
    return connect_host(options.get("ip", C.DEFAULT_AGENT_IP)), port, origin


def connect_host(listen_ip):
    """Where to connect to reach a server bound to listen_ip (wildcards mean this host)."""
    ip = listen_ip.strip().strip("[]")
    if ip in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if ip == "::":
        return "::1"
    return ip


def accepts(host, port, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(host, port, timeout, interval=0.2, clock=time.monotonic):
    """Seconds until host:port accepted a connection, or None after timeout seconds."""
    start = clock()
    deadline = start + timeout
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        if accepts(host, port, min(remaining, 2.0)):
            return clock() - start
        time.sleep(max(0.0, min(interval, deadline - clock())))


def main(argv=None, environ=os.environ):
    parser = Parser(prog=PROG, description="Wait until the local Keylime agent accepts connections "
                    "on its configured port. Exit 0 listening, 1 not within the timeout, 64 usage, "
                    "78 configuration error.")
    parser.add_argument("--port", type=port_number, help="port to wait for (default: [agent] port, else 9002)")
    parser.add_argument("--host", help="address to connect to (default: from [agent] ip, else 127.0.0.1)")
    parser.add_argument("--timeout", type=positive_float, default=C.DEFAULT_AGENT_WAIT_TIMEOUT,
                        help="give up after this many seconds (default %(default)s; keep it below "
                             "the agent unit's TimeoutStartSec)")
    parser.add_argument("--interval", type=positive_float, default=0.2, help="seconds between attempts")
    args = parser.parse_args(argv)
    try:
        host, port, origin = agent_address(environ)
    except ConfigProblem as exc:
        if args.port is None or args.host is None:
            say(PROG, "configuration error: %s" % exc)
            return EX_CONFIG
        host, port, origin = args.host, args.port, "command line"
    if args.port is not None:
        port, origin = args.port, "command line"
    if args.host:
        host = args.host
    waited = wait_for(host, port, args.timeout, args.interval)
    if waited is None:
        say(PROG, "agent not listening on %s port %d (from %s) after %.1f s; giving up, units "
                  "ordered after the agent start anyway" % (host, port, origin, args.timeout))
        return EX_NOT_READY
    say(PROG, "agent listening on %s port %d (from %s) after %.1f s" % (host, port, origin, waited))
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
