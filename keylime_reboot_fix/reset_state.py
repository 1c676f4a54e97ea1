"""The reset cap's memory: how often each agent was reset without attesting in between.

One JSON value per line, so that it is read and written as a stream (memory does not grow with
the fleet): a header object, then `[agent_id, resets, attestation_count, last_successful_attestation]`
per agent, the last two as seen in the database at the agent's last reset. It is replaced
atomically (temporary file in the same directory, fsync, rename, fsync of the directory), so a
crash leaves either the old or the new file, never a mix.
"""

import os
import stat

from . import constants as C
from .errors import PermissionProblem, StateFileCorrupt, StateFileUnwritable

HEADER = {"format": "keylime-reboot-fix reset state", "version": 1}


def _is_count(value):
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _numbered_lines(handle, path):
    try:
        yield from enumerate(handle, 1)
    except UnicodeDecodeError as exc:
        raise StateFileCorrupt("reset-state file %s is not UTF-8 text" % path) from exc


def read_entries(path):
    """Yield (agent_id, resets, attestation_count, last_successful_attestation); none if no file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateFileUnwritable("cannot look up reset-state file %s: %s" % (path, exc.strerror)) from exc
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise PermissionProblem("refusing reset-state file %s: not a regular file" % path)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise PermissionProblem("cannot read reset-state file %s: %s" % (path, exc.strerror)) from exc
    import json  # json only once there is a state file: most boots have none to read

    with handle:
        for number, line in _numbered_lines(handle, path):
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if number == 1:
                if value != HEADER:
                    raise StateFileCorrupt("reset-state file %s: line 1 is not a version-1 header" % path)
                continue
            if (not isinstance(value, list) or len(value) != 4 or not isinstance(value[0], str)
                    or not isinstance(value[1], int) or isinstance(value[1], bool) or value[1] < 1
                    or not _is_count(value[2]) or not _is_count(value[3])):
                raise StateFileCorrupt("reset-state file %s: line %d is not a valid entry" % (path, number))
            yield tuple(value)


HEADER_LINE = '{"format": "keylime-reboot-fix reset state", "version": 1}\n'


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_string(text):
    """A JSON string literal, as json.dumps writes it (which would import the re module at boot)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"%s"' % text  # nothing to escape: the usual agent_id, without a loop per character
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code > 0x7E:
            if code > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as json.dumps does
                code -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)))
            else:
                out.append("\\u%04x" % code)
        else:
            out.append(ch)
    return '"%s"' % "".join(out)


def _json_count(value):
    return "null" if value is None else "%d" % value


def format_entry(entry):
    """One state line: ["agent", resets, attestation_count, last_successful_attestation]."""
    agent_id, resets, count, last = entry
    return "[%s, %d, %s, %s]\n" % (_json_string(agent_id), resets, _json_count(count), _json_count(last))


class Replaced:
    """The previous reset-state file, kept under a second name until the commit is known.

    restore() puts it back (or removes the new file when there was none): for a commit that
    failed and so changed nothing, after which the file must not count resets that did not
    happen. discard() drops it once the commit went through."""

    def __init__(self, path, previous):
        self.path, self.previous = path, previous

    def restore(self):
        try:
            if self.previous is not None:
                os.replace(self.previous, self.path)
            else:
                os.unlink(self.path)
            _fsync_dir(os.path.dirname(self.path) or ".")
        except OSError as exc:
            raise StateFileUnwritable("cannot restore reset-state file %s after the failed commit: %s"
                                      % (self.path, exc.strerror)) from exc

    def discard(self):
        if self.previous is not None:
            _remove_quietly(self.previous)  # a leftover is harmless: the next run replaces it first


def _fsync_dir(directory):
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink_stale(path):
    """A file of ours left by a run that was killed (same name: the same pid after a reboot)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _keep_previous(path, previous):
    """Keep the current file also as `previous` (a hard link, or a copy where links fail)."""
    _unlink_stale(previous)
    try:
        os.link(path, previous)
        return previous
    except FileNotFoundError:
        return None  # no state yet: restoring means removing the new file
    except OSError:
        pass
    with open(path, "rb") as src, open(previous, "xb") as dst:
        while True:
            chunk = src.read(65536)
            if not chunk:
                return previous
            dst.write(chunk)


def write_entries(path, entries):
    """Atomically replace the file with the given entries (an iterable, consumed once).

    Returns a Replaced, through which the caller restores the previous file if its commit fails."""
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    tmp = os.path.join(directory, ".%s.%d.tmp" % (base, os.getpid()))
    previous = os.path.join(directory, ".%s.previous" % base)
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        _unlink_stale(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    except OSError as exc:
        raise StateFileUnwritable("cannot write reset-state file %s: %s" % (path, exc.strerror)) from exc
    kept = None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(HEADER_LINE)
            for entry in entries:
                handle.write(format_entry(entry))
            handle.flush()
            os.fsync(handle.fileno())
        kept = _keep_previous(path, previous)
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in (tmp, kept):
            if leftover is not None:
                _remove_quietly(leftover)
        if isinstance(exc, OSError):
            raise StateFileUnwritable("cannot write reset-state file %s: %s" % (path, exc.strerror)) from exc
        raise
    replaced = Replaced(path, kept)
    try:
        _fsync_dir(directory)
    except OSError as exc:
        try:
            replaced.restore()
        except StateFileUnwritable:
            pass
        raise StateFileUnwritable("cannot write reset-state file %s: %s" % (path, exc.strerror)) from exc
    return replaced


def dir_owner(path):
    """lstat of the state file's directory when it exists and is not root's, else None."""
    try:
        st = os.lstat(os.path.dirname(path) or ".")
    except OSError:
        return None
    return st if stat.S_ISDIR(st.st_mode) and st.st_uid != 0 else None


def prepare_dir(path, uid, gid):
    """As root, before becoming the database owner: make sure that owner can write the state.

    Creates the directory (0750, owned by uid:gid) if missing. An existing directory is handed
    over only when it is this package's own default directory and still root's; any other
    directory an admin chose is left as it is.
    """
    directory = os.path.dirname(path) or "."
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        try:
            os.makedirs(directory, mode=0o750)
            os.chown(directory, uid, gid)
        except OSError as exc:
            raise StateFileUnwritable("cannot create state directory %s: %s" % (directory, exc.strerror)) from exc
        return
    if (os.path.abspath(directory) == C.STATE_DIR and stat.S_ISDIR(st.st_mode)
            and st.st_uid == 0 and uid != 0):
        os.chown(directory, uid, gid)
