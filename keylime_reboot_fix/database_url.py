"""Read the verifier's database_url as keylime/db/keylime_db.py does, without echoing secrets.

`sqlite` means $KEYLIME_DIR/cv_data.sqlite; `sqlite:///path` is SQLAlchemy's form (four slashes for
an absolute path, three for one relative to the working directory). `postgresql://…` and
`mysql://…` / `mariadb://…` (any driver suffix, e.g. `mysql+pymysql`) are a fleet's shared
database, opened through SQLAlchemy by sqlalchemy_store. Such a URL may carry a password: only
masked() forms of it are ever put into a message.
"""

import os

from . import constants as C
from .errors import ConfigError

SQLITE_PREFIX = "sqlite:///"
# Engines a Keylime fleet shares (keylime/db/keylime_db.py hands the URL to SQLAlchemy).
SERVER_BACKENDS = ("postgresql", "mysql", "mariadb")

# Patterns for a fleet's URL only; compiled on first use (re stays off the SQLite boot path).
_USERINFO = r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)(.*)@"
_QUERY_PASSWORD = r"([?&](?:password|passwd)=)[^&]*"
MASK = "***"


def is_sqlite(database_url):
    return database_url == "sqlite" or database_url.startswith("sqlite:")


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
    raise ConfigError("database_url uses the '%s' engine; not an SQLite database" % backend(database_url))


def backend(database_url):
    """'postgresql' for postgresql+psycopg2://…; 'unknown' when the URL has no scheme."""
    if "://" not in database_url:
        return "unknown"
    return database_url.split("://", 1)[0].split("+", 1)[0].lower()


def server_url(database_url):
    """The URL itself when it names a fleet's PostgreSQL or MySQL/MariaDB database."""
    name = backend(database_url)
    if name not in SERVER_BACKENDS:
        raise ConfigError("database_url uses the '%s' engine; this command opens SQLite, PostgreSQL "
                          "and MySQL/MariaDB verifier databases only" % name)
    return database_url


def password(database_url):
    """The password as written in the URL's user info (still %-encoded), or None."""
    import re

    match = re.match(_USERINFO, database_url, re.S)
    return match.group(2) if match and match.group(2) else None


def masked(database_url):
    """The URL with the password of its user info and any password= query value replaced."""
    import re

    text = re.sub(_USERINFO, lambda m: m.group(1) + MASK + "@", database_url, count=1, flags=re.S)
    return re.sub(_QUERY_PASSWORD, lambda m: m.group(1) + MASK, text, flags=re.I)


def secrets(database_url):
    """Every spelling of the URL's passwords a driver might echo: as written, decoded, re-encoded."""
    import re
    from urllib.parse import quote, unquote  # only for a fleet's URL: not on the SQLite boot path

    found = set()
    for value in [password(database_url)] + [m.group(0).split("=", 1)[1]
                                              for m in re.finditer(_QUERY_PASSWORD, database_url, re.I)]:
        if value:
            found.update((value, unquote(value), quote(unquote(value), safe="")))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text, database_url):
    """text with the URL's passwords (in any spelling) replaced by ***."""
    for secret in secrets(database_url):
        text = text.replace(secret, MASK)
    return text
