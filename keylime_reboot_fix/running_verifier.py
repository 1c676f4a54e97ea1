"""Is a Keylime verifier process running on this host?

A reset written under a running verifier produces rows that look healthy (state 3) but are
polled by nobody, because the verifier only picks rows up when it starts. As the verifier's
ExecStartPre no verifier process exists yet, so the check never gets in the way at boot.
"""

import os

from . import constants as C


def _is_verifier(argv):
    # A console script runs as "python3 /usr/bin/keylime_verifier"; a module as "-m keylime.cmd.verifier".
    for arg in argv[:3]:
        if os.path.basename(arg) in C.VERIFIER_PROCESS_NAMES:
            return True
    return False


def running_verifiers(proc_root="/proc"):
    """PIDs of processes whose command line is a Keylime verifier's, this process excluded."""
    pids = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return pids
    own = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # the process ended meanwhile, or is hidden from us
        argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if _is_verifier(argv):
            pids.append(int(entry))
    return sorted(pids)
