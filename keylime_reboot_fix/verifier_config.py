"""Find the verifier's database URL and uuid exactly as Keylime's verifier does.

Mirrors keylime/config.py: KEYLIME_VERIFIER_CONFIG (an existing regular file) is the only file
read; otherwise the first existing base file of /etc then /usr/etc, then every regular file of
the snippet directories /usr/etc/... then /etc/..., each in plain sorted order, the last value
winning; KEYLIME_VERIFIER_<OPTION> beats every file; surrounding double quotes and spaces are
stripped. A duplicated key or a missing section header is an error, as it is for the verifier.
No base file at all means Keylime's shipped defaults (database_url = sqlite, uuid = default).
"""

import configparser
import os

from . import constants as C
from .errors import ConfigError


class VerifierConfig:
    """What the reset needs from the verifier's configuration, and where it came from."""

    def __init__(self, database_url, uuid, keylime_dir, files):
        self.database_url = database_url
        self.uuid = uuid
        self.keylime_dir = keylime_dir
        self.files = files  # the files read, in order; empty means Keylime's defaults

    def describe(self):
        return ", ".join(self.files) if self.files else "no configuration file (Keylime defaults)"


def config_files(environ, config_file=None):
    """The configuration files the verifier would read, in reading order."""
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise ConfigError("--config %s: not a regular file" % config_file)
        return [config_file]
    env_file = environ.get(C.VERIFIER_CONFIG_ENV)
    if env_file and os.path.isfile(env_file):
        return [env_file]
    for base in C.VERIFIER_BASE_CONFIGS:
        if os.path.exists(base):
            files = [base]
            for snippet_dir in C.VERIFIER_SNIPPET_DIRS:
                if os.path.isdir(snippet_dir):
                    files += sorted(os.path.join(snippet_dir, name) for name in os.listdir(snippet_dir)
                                    if os.path.isfile(os.path.join(snippet_dir, name)))
            return files
    return []


def _parse(files):
    parser = configparser.RawConfigParser()
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle, source=path)
        except OSError as exc:
            raise ConfigError("cannot read verifier configuration %s: %s" % (path, exc.strerror)) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError("verifier configuration %s is not UTF-8 text" % path) from exc
        except configparser.Error as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise ConfigError("invalid verifier configuration %s: %s" % (path, first_line)) from exc
    return parser


def _option(parser, environ, option, fallback):
    """One [verifier] option as Keylime's config.get() returns it."""
    env_value = environ.get(C.VERIFIER_OPTION_ENV_PREFIX + option.upper())
    if env_value is not None:
        return env_value.strip('" ')
    if parser.has_option(C.VERIFIER_SECTION, option):
        return parser.get(C.VERIFIER_SECTION, option).strip('" ')
    return fallback


def load(environ, config_file=None):
    """Read the verifier configuration as the verifier would; raises ConfigError."""
    files = config_files(environ, config_file)
    parser = _parse(files)
    keylime_dir = environ.get(C.KEYLIME_DIR_ENV, C.DEFAULT_KEYLIME_DIR)
    default_url = "sqlite" if not files else None
    database_url = _option(parser, environ, "database_url", default_url)
    if not database_url:
        raise ConfigError("database_url is not set in [%s] of %s" % (C.VERIFIER_SECTION, ", ".join(files)))
    uuid = _option(parser, environ, "uuid", C.DEFAULT_VERIFIER_UUID)
    return VerifierConfig(database_url, uuid, keylime_dir, files)
