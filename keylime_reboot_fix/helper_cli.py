"""Shared command-line plumbing for the small systemd helpers: one-line errors, sysexits codes.

The helpers run from units, where the journal is the only place an admin looks: every message is
one line on stderr prefixed with the helper's name, and bad input exits 64 (usage) or 78
(configuration), never with a traceback.
"""

import argparse
import sys

from .errors import EX_USAGE


def say(prog, message):
    """One line on stderr (the unit's journal when run by systemd)."""
    print("%s: %s" % (prog, message), file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit 64 instead of a usage block and 2."""

    def error(self, message):
        say(self.prog, "usage error: %s (see --help)" % message)
        sys.exit(EX_USAGE)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds: %r" % text)
    return value


def port_number(text):
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("port out of range 1-65535: %r" % text)
    return value
