"""systemd generator: order the verifier after the local agent only where that cannot cycle.

"keylime_verifier.service After=keylime_agent.service" makes the verifier's first poll find the
local agent listening (the write-up's fix). Every packaged Keylime layout orders the verifier
Before= the registrar, and the agent is ordered after the registrar, so there the edge closes an
ordering cycle and systemd deletes a start job at boot; a static drop-in cannot know the layout
and cannot remove Before=. This generator runs at every boot and daemon-reload, reads the unit
files actually installed (the system unit search path with drop-ins and .wants/.requires links),
and emits the edge only when nothing already orders the verifier before the agent, directly or
through other units. Its decision, with the path that blocks the edge, goes to the kernel log
(journalctl -b -t keylime-reboot-fix-generator) and to /run/keylime-reboot-fix/generator.log;
`keylime-reboot-fix-generator --explain` prints what it would decide now.

Edges produced by other generators are not seen (generators run in parallel). On an internal
error it emits nothing (the safe side) and exits 70.

Exit codes: 0 decided (edge emitted or not), 64 usage, 70 internal error (nothing emitted).
"""

import collections
import os
import sys

from . import constants as C
from .errors import EX_OK, EX_SOFTWARE, EX_USAGE

PROG = "keylime-reboot-fix-generator"
DROPIN_NAME = "50-keylime-reboot-fix-after-agent.conf"
REPORT_DIR = "/run/keylime-reboot-fix"
REPORT_FILE = REPORT_DIR + "/generator.log"

# The system manager's search path (systemd.unit(5)), without the generator output directories.
DEFAULT_UNIT_PATH = (
    "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
    "/etc/systemd/system", "/etc/systemd/system.attached", "/run/systemd/system",
    "/run/systemd/system.attached", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".automount", ".swap", ".path",
                 ".timer", ".slice", ".scope", ".device")

Edge = collections.namedtuple("Edge", "first then origin")  # `first` is ordered before `then`


def unit_path(environ=os.environ):
    """Directories in priority order; $SYSTEMD_UNIT_PATH as systemd reads it (trailing ':' appends the default)."""
    value = environ.get("SYSTEMD_UNIT_PATH")
    if not value:
        return list(DEFAULT_UNIT_PATH)
    dirs = value.split(":")
    extra = list(DEFAULT_UNIT_PATH) if dirs[-1] == "" else []
    return [d for d in dirs if d] + extra


def parse(text):
    """[(section, key, value)] of a unit file: comments, continuation lines, blank values kept."""
    items, section, pending = [], None, ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" in line and section is not None:
            key, value = line.split("=", 1)
            items.append((section, key.strip(), value.strip()))
    return items


def dropin_dirs(name):
    """foo-bar.service.d, then the prefix directories foo-.service.d and the type-wide service.d
    (systemd >= 246), most specific first."""
    stem, _, kind = name.rpartition(".")
    parts = stem.split("-")
    prefixes = ["-".join(parts[:i]) + "-." + kind + ".d" for i in range(len(parts) - 1, 0, -1)]
    return [name + ".d"] + prefixes + [kind + ".d"]


class UnitSet:
    """The units installed under a search path, merged with their drop-ins as systemd merges them."""

    def __init__(self, dirs):
        self.dirs = [d for d in dirs if os.path.isdir(d)]
        self.fragments = {}   # unit name -> path of the file that defines it (first in the path)
        self.masked = set()
        self.aliases = {}     # alias name -> unit name
        self.dep_links = collections.defaultdict(list)  # unit -> [(kind, other, origin)] from .wants/.requires
        self._scan()

    def _scan(self):
        for directory in self.dirs:
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if name.endswith(UNIT_SUFFIXES) and name not in self.fragments and name not in self.masked:
                    self._add_fragment(name, path)
                for kind in ("wants", "requires"):
                    if name.endswith("." + kind) and os.path.isdir(path):
                        owner = name[: -len(kind) - 1]
                        for member in sorted(os.listdir(path)):
                            if member.endswith(UNIT_SUFFIXES):
                                self.dep_links[owner].append((kind, member, os.path.join(path, member)))

    def _add_fragment(self, name, path):
        if os.path.islink(path):
            target = os.path.realpath(path)
            if target == "/dev/null":
                self.masked.add(name)
                return
            base = os.path.basename(target)
            if base != name and base.endswith(UNIT_SUFFIXES) and os.path.splitext(base)[1] == os.path.splitext(name)[1]:
                self.aliases[name] = base
        if not os.path.isfile(path):
            return
        if os.path.getsize(path) == 0:
            self.masked.add(name)
            return
        self.fragments[name] = path

    def canonical(self, name):
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def exists(self, name):
        name = self.canonical(name)
        return name in self.fragments and name not in self.masked

    def dropins(self, name, skip=(DROPIN_NAME,)):
        """Drop-in paths of a unit: same file name -> highest-priority directory, applied by name."""
        chosen = {}
        for directory in self.dirs:
            for unit_dir in dropin_dirs(name):
                full = os.path.join(directory, unit_dir)
                if not os.path.isdir(full):
                    continue
                for entry in sorted(os.listdir(full)):
                    if entry.endswith(".conf") and entry not in skip and entry not in chosen:
                        path = os.path.join(full, entry)
                        if os.path.isfile(path) and os.path.realpath(path) != "/dev/null":
                            chosen[entry] = path
        return [chosen[e] for e in sorted(chosen)]

    def settings(self, name):
        """{key: [(word, origin path)]} of the [Unit] section, fragment then drop-ins in order."""
        name = self.canonical(name)
        merged = collections.defaultdict(list)
        for path in [self.fragments[name]] + self.dropins(name):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    items = parse(handle.read())
            except OSError:
                continue
            for section, key, value in items:
                if section != "Unit":
                    continue
                # An empty After=/Before= does not reset the list: dependency lists only append.
                merged[key].extend((word, path) for word in value.split())
        return merged

    def ordering_edges(self):
        """Every ordering edge the installed files declare, plus targets' implicit After= on what they want."""
        edges, implicit = [], []
        for name in sorted(self.fragments):
            if name in self.masked or name in self.aliases:
                continue
            settings = self.settings(name)
            for other, origin in settings.get("After", []):
                edges.append(Edge(self.canonical(other), name, "%s: After=%s" % (origin, other)))
            for other, origin in settings.get("Before", []):
                edges.append(Edge(name, self.canonical(other), "%s: Before=%s" % (origin, other)))
            if name.endswith(".target") and _yes(settings.get("DefaultDependencies"), True):
                wanted = [(o, p, k) for k in ("Wants", "Requires") for o, p in settings.get(k, [])]
                wanted += [(o, p, k.capitalize()) for k, o, p in self.dep_links.get(name, [])]
                for other, origin, kind in wanted:
                    implicit.append(Edge(self.canonical(other), name, "%s: %s=%s (a target is ordered "
                                         "after what it wants)" % (origin, kind, other)))
        # systemd adds a target's implicit After= only where no ordering between the two is configured.
        explicit = {(e.first, e.then) for e in edges}
        edges += [e for e in implicit if (e.then, e.first) not in explicit]
        return edges


def _yes(values, default):
    if not values:
        return default
    return values[-1][0].lower() in ("1", "yes", "true", "on")


def path_between(edges, start, goal):
    """The edges of one shortest ordering path start -> ... -> goal (start ordered before goal), or None."""
    after = collections.defaultdict(list)
    for edge in edges:
        after[edge.first].append(edge)
    previous, queue = {start: None}, collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while previous[node] is not None:
                path.append(previous[node])
                node = previous[node].first
            return list(reversed(path))
        for edge in after[node]:
            if edge.then not in previous:
                previous[edge.then] = edge
                queue.append(edge.then)
    return None


def describe(path):
    return " -> ".join([path[0].first] + [e.then for e in path]) + "".join(
        "\n    %s before %s  (%s)" % (e.first, e.then, e.origin) for e in path)


def decide(units):
    """(emit the edge?, [report lines])."""
    verifier, agent = C.VERIFIER_UNIT, C.AGENT_UNIT
    if not units.exists(verifier):
        return False, ["%s is not installed here: nothing to order" % verifier]
    if not units.exists(agent):
        return False, ["%s is not installed here (no local agent): %s is not ordered after it"
                       % (agent, verifier)]
    edges = units.ordering_edges()
    lines = []
    for unit in (C.REGISTRAR_UNIT, C.CERT_RENEWAL_UNIT):
        # The package's static agent drop-in orders the agent after these; say so if that cycles.
        loop = path_between(edges, agent, unit)
        if loop and path_between(edges, unit, agent):
            lines.append("WARNING: ordering cycle through %s and %s in the installed units: %s"
                         % (unit, agent, describe(loop)))
    if path_between(edges, agent, verifier):
        lines.append("%s is already ordered after %s by the installed units: nothing to add"
                     % (verifier, agent))
        return False, lines
    blocking = path_between(edges, verifier, agent)
    if blocking:
        lines.append("NOT ordering %s after %s: that would close an ordering cycle, because the "
                     "installed units order the verifier before the agent: %s"
                     % (verifier, agent, describe(blocking)))
        lines.append("the verifier starts without waiting for the local agent; "
                     "keylime-reset-failed (its ExecStartPre) recovers agents FAILED at the last shutdown")
        return False, lines
    lines.append("ordering %s after %s: nothing orders the verifier before the agent, so this "
                 "cannot cycle" % (verifier, agent))
    return True, lines


def dropin_text(lines):
    comment = "".join("# %s\n" % line for text in lines for line in text.splitlines())
    return ("# Generated at boot and daemon-reload by %s (package keylime-reboot-fix).\n%s"
            "[Unit]\n# Poll the local agent only once it has started (and listens: its ExecStartPost waits).\n"
            "After=%s\n" % (PROG, comment, C.AGENT_UNIT))


def emit(output_dir, lines):
    directory = os.path.join(output_dir, C.VERIFIER_UNIT + ".d")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, DROPIN_NAME), "w", encoding="utf-8") as handle:
        handle.write(dropin_text(lines))


def log(lines, report_file=REPORT_FILE):
    """The decision to the kernel log (the journal) and to a file an admin can read; best effort."""
    text = "".join("%s\n" % line for line in lines)
    try:
        with open("/dev/kmsg", "w", encoding="utf-8") as kmsg:
            for line in text.splitlines():
                kmsg.write("<%d>%s[%d]: %s\n" % (4 if "WARNING" in line else 5, PROG, os.getpid(), line))
                kmsg.flush()
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(report_file), mode=0o755, exist_ok=True)
        with open(report_file, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        pass


def main(argv=None, environ=os.environ):
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print("usage: %s NORMAL_DIR [EARLY_DIR LATE_DIR]   (run by systemd)\n"
              "       %s --explain                     (print the decision for the installed units)\n"
              "Exit 0 decided, 64 usage, 70 internal error (nothing emitted)." % (PROG, PROG))
        return EX_OK
    explain = argv == ["--explain"]
    if not explain and len(argv) not in (1, 3):
        print("%s: usage error: expected NORMAL_DIR [EARLY_DIR LATE_DIR] or --explain" % PROG, file=sys.stderr)
        return EX_USAGE
    try:
        dirs = unit_path(environ)
        emit_edge, lines = decide(UnitSet(dirs))
    except Exception as exc:  # never break the boot over this: emit nothing, say why
        lines = ["internal error, no edge emitted: %s: %s" % (type(exc).__name__, exc)]
        if not explain:
            log(lines)
        print("%s: %s" % (PROG, lines[0]), file=sys.stderr)
        return EX_SOFTWARE
    lines.insert(0, "units read from: %s" % " ".join(dirs))
    if explain:
        print("\n".join(lines))
        print("=> %s" % ("After=%s would be emitted" % C.AGENT_UNIT if emit_edge else "no edge emitted"))
        return EX_OK
    if emit_edge:
        emit(argv[0], lines)
    log(lines + ["=> %s" % ("emitted %s/%s.d/%s" % (argv[0], C.VERIFIER_UNIT, DROPIN_NAME)
                            if emit_edge else "no edge emitted")],
        report_file=environ.get("KEYLIME_REBOOT_FIX_GENERATOR_REPORT", REPORT_FILE))
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
