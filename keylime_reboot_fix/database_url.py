"""Turn the verifier's database_url into the SQLite file it names, as keylime/db/keylime_db.py does.

`sqlite` means $KEYLIME_DIR/cv_data.sqlite; `sqlite:///path` is SQLAlchemy's form (four slashes for
an absolute path, three for one relative to the working directory). Other engines are for fleets
of verifiers and are not opened by this command; their URL is never echoed, since it may carry a
password.
"""

import os

from . import constants as C
from .errors import ConfigError

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(database_url, keylime_dir):
    """Absolute path of the SQLite database the URL names; ConfigError for anything else."""
    if database_url == "sqlite":
        return os.path.abspath(os.path.join(keylime_dir, C.VERIFIER_DB_FILE))
    if database_url.startswith(SQLITE_PREFIX):
        path = database_url[len(SQLITE_PREFIX):].split("?", 1)[0]
        if not path or path == ":memory:":
            raise ConfigError("database_url names no SQLite file: %s" % database_url)
        return os.path.abspath(path)
    if database_url.startswith("sqlite"):
        raise ConfigError("database_url names no SQLite file: %s" % database_url)
    scheme = database_url.split(":", 1)[0] if ":" in database_url else "unknown"
    raise ConfigError("database_url uses the '%s' engine; this command opens only SQLite verifier "
                      "databases (use --db PATH)" % scheme)
