"""Checks on the database path, and acting as the database's owner.

The verifier usually runs as `keylime`; an admin runs this command as root. SQLite creates its
rollback journal beside the database with the creating process's owner, so a root-owned journal
could later lock the verifier out of its own database. When root runs the reset on a database
owned by someone else, the process therefore becomes that owner (uid and gid, no supplementary
groups) before it opens anything. A database reached through a symlink, or writable by other
users, is refused: the verifier's own data must not be redirected or planted by someone else.
"""

import os
import stat

from .errors import DatabaseUnreadable, PermissionProblem


def check(path):
    """lstat of the database after the safety checks; None when it does not exist (first boot)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise PermissionProblem("cannot look up database %s: permission denied" % path) from exc
    except OSError as exc:
        raise DatabaseUnreadable("cannot look up database %s: %s" % (path, exc.strerror)) from exc
    if stat.S_ISLNK(st.st_mode):
        raise PermissionProblem("refusing database %s: it is a symbolic link" % path)
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseUnreadable("database %s is not a regular file" % path)
    if st.st_mode & stat.S_IWOTH:
        raise PermissionProblem("refusing database %s: it is writable by other users (mode %04o)"
                                % (path, stat.S_IMODE(st.st_mode)))
    parent = os.path.dirname(path) or "."
    pst = os.stat(parent)
    if pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX:
        raise PermissionProblem("refusing database %s: its directory %s is writable by other users"
                                % (path, parent))
    return st


def become(uid, gid):
    """Drop root for good: the rest of the run creates files as uid:gid."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def require_access(path, write):
    """Fail early, with the right exit code, where SQLite would only say 'unable to open'."""
    if not os.access(path, os.R_OK | (os.W_OK if write else 0)):
        raise PermissionProblem("permission denied: cannot %s database %s as uid %d"
                                % ("write" if write else "read", path, os.geteuid()))
    parent = os.path.dirname(path) or "."
    if write and not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionProblem("permission denied: cannot create the rollback journal in %s as uid %d"
                                % (parent, os.geteuid()))
