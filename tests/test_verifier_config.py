"""Finding the database as the verifier does (keylime/config.py), on a fake filesystem (pyfakefs)."""

import pytest

from keylime_reboot_fix import database_url, verifier_config
from keylime_reboot_fix.errors import ConfigError

ETC = "/etc/keylime/verifier.conf"
USR = "/usr/etc/keylime/verifier.conf"


def load(env=None):
    cfg = verifier_config.load(env or {})
    return cfg.database_url, cfg.uuid, cfg.files, database_url.sqlite_path(cfg.database_url, cfg.keylime_dir) \
        if cfg.database_url.startswith("sqlite") else None


def test_no_configuration_means_keylime_defaults(fs):
    assert load() == ("sqlite", "default", [], "/var/lib/keylime/cv_data.sqlite")


def test_keylime_dir_moves_the_sqlite_keyword(fs):
    assert load({"KEYLIME_DIR": "/srv/kl"})[3] == "/srv/kl/cv_data.sqlite"


def test_etc_base_file_beats_usr_etc(fs):
    fs.create_file(ETC, contents="[verifier]\nuuid = from-etc\ndatabase_url = sqlite\n")
    fs.create_file(USR, contents="[verifier]\nuuid = from-usr\ndatabase_url = sqlite:////usr.db\n")
    assert load()[:3] == ("sqlite", "from-etc", [ETC])


def test_usr_etc_base_file_when_etc_has_none(fs):
    fs.create_file(USR, contents="[verifier]\nuuid = from-usr\ndatabase_url = sqlite:////srv/usr.db\n")
    assert load() == ("sqlite:////srv/usr.db", "from-usr", [USR], "/srv/usr.db")


def test_snippets_in_sorted_order_usr_then_etc_last_wins(fs):
    fs.create_file(ETC, contents="[verifier]\nuuid = base\ndatabase_url = sqlite\n")
    fs.create_file("/usr/etc/keylime/verifier.conf.d/10-a.conf", contents="[verifier]\nuuid = usr-10\n")
    fs.create_file("/usr/etc/keylime/verifier.conf.d/20-b.conf",
                   contents="[verifier]\ndatabase_url = sqlite:////usr20.db\n")
    fs.create_file("/etc/keylime/verifier.conf.d/05-z.conf", contents="[verifier]\nuuid = etc-05\n")
    fs.create_file("/etc/keylime/verifier.conf.d/B.conf", contents="[verifier]\nuuid = etc-B\n")
    fs.create_file("/etc/keylime/verifier.conf.d/a.conf", contents="[verifier]\nuuid = etc-a\n")
    fs.create_dir("/etc/keylime/verifier.conf.d/subdir.conf")
    url, uuid, files, path = load()
    # plain sorted order: "05-z" < "B" < "a" (uppercase before lowercase), directories skipped
    assert files == [ETC, "/usr/etc/keylime/verifier.conf.d/10-a.conf", "/usr/etc/keylime/verifier.conf.d/20-b.conf",
                     "/etc/keylime/verifier.conf.d/05-z.conf", "/etc/keylime/verifier.conf.d/B.conf",
                     "/etc/keylime/verifier.conf.d/a.conf"]
    assert (url, uuid, path) == ("sqlite:////usr20.db", "etc-a", "/usr20.db")


def test_snippets_are_ignored_without_a_base_file(fs):
    fs.create_file("/etc/keylime/verifier.conf.d/a.conf", contents="[verifier]\nuuid = snippet\n")
    assert load()[:3] == ("sqlite", "default", [])


def test_keylime_verifier_config_is_the_only_file_read(fs):
    fs.create_file(ETC, contents="[verifier]\nuuid = etc\ndatabase_url = sqlite\n")
    fs.create_file("/etc/keylime/verifier.conf.d/a.conf", contents="[verifier]\nuuid = snippet\n")
    fs.create_file("/opt/test.conf", contents="[verifier]\nuuid = env-file\ndatabase_url = sqlite:////opt/t.db\n")
    assert load({"KEYLIME_VERIFIER_CONFIG": "/opt/test.conf"}) == (
        "sqlite:////opt/t.db", "env-file", ["/opt/test.conf"], "/opt/t.db")


def test_keylime_verifier_config_naming_no_file_falls_back_to_the_search(fs):
    fs.create_file(ETC, contents="[verifier]\nuuid = etc\ndatabase_url = sqlite\n")
    fs.create_dir("/opt/a-directory")
    assert load({"KEYLIME_VERIFIER_CONFIG": "/opt/a-directory"})[1:3] == ("etc", [ETC])
    assert load({"KEYLIME_VERIFIER_CONFIG": "/opt/missing.conf"})[1:3] == ("etc", [ETC])


def test_environment_overrides_beat_every_file_and_quotes_are_stripped(fs):
    fs.create_file(ETC, contents='[verifier]\nuuid = "quoted"\ndatabase_url = " sqlite "\n')
    assert load()[:2] == ("sqlite", "quoted")
    env = {"KEYLIME_VERIFIER_UUID": '"from-env"', "KEYLIME_VERIFIER_DATABASE_URL": '"sqlite:////env.db"'}
    assert load(env) == ("sqlite:////env.db", "from-env", [ETC], "/env.db")


def test_explicit_config_option_reads_only_that_file(fs):
    fs.create_file(ETC, contents="[verifier]\nuuid = etc\ndatabase_url = sqlite\n")
    fs.create_file("/root/v.conf", contents="[verifier]\nuuid = cli\ndatabase_url = sqlite:///rel/cv.db\n")
    cfg = verifier_config.load({}, config_file="/root/v.conf")
    assert (cfg.uuid, cfg.files) == ("cli", ["/root/v.conf"])


@pytest.mark.parametrize("contents, message", [
    ("[verifier]\nuuid = a\nuuid = b\n",
     "invalid verifier configuration /etc/keylime/verifier.conf: While reading from '/etc/keylime/verifier.conf' "
     "[line  3]: option 'uuid' in section 'verifier' already exists"),
    ("uuid = a\n",
     "invalid verifier configuration /etc/keylime/verifier.conf: File contains no section headers."),
    ("[verifier]\nuuid = a\n",
     "database_url is not set in [verifier] of /etc/keylime/verifier.conf"),
])
def test_configuration_the_verifier_would_refuse_is_an_error(fs, contents, message):
    fs.create_file(ETC, contents=contents)
    with pytest.raises(ConfigError) as err:
        verifier_config.load({})
    assert str(err.value) == message
    assert err.value.exit_code == 78


def test_missing_explicit_config_file_is_an_error(fs):
    with pytest.raises(ConfigError) as err:
        verifier_config.load({}, config_file="/nope.conf")
    assert str(err.value) == "--config /nope.conf: not a regular file"


@pytest.mark.parametrize("url, expected", [
    ("sqlite", "/var/lib/keylime/cv_data.sqlite"),
    ("sqlite:////abs/path/cv.db", "/abs/path/cv.db"),
    ("sqlite:////abs/path/cv.db?timeout=5", "/abs/path/cv.db"),
])
def test_sqlite_urls(url, expected):
    assert database_url.sqlite_path(url, "/var/lib/keylime") == expected


@pytest.mark.parametrize("url, message", [
    ("postgresql://keylime:s3cret@db/keylime", "database_url uses the 'postgresql' engine; not an SQLite database"),
    ("mysql+pymysql://k:pw@db/keylime", "database_url uses the 'mysql' engine; not an SQLite database"),
    ("sqlite://", "database_url names no SQLite file: sqlite://"),
    ("sqlite:///:memory:", "database_url names no SQLite file: sqlite:///:memory:"),
    ("nonsense", "database_url uses the 'unknown' engine; not an SQLite database"),
])
def test_other_urls_are_configuration_errors_without_credentials(url, message):
    with pytest.raises(ConfigError) as err:
        database_url.sqlite_path(url, "/var/lib/keylime")
    assert str(err.value) == message


@pytest.mark.parametrize("url", ["postgresql://keylime:s3cret@db/keylime", "postgresql+psycopg2://db/k",
                                 "mysql+pymysql://k:pw@db/keylime", "mariadb+pymysql://k@db/k", "mysql://db/k"])
def test_fleet_urls_go_to_the_server_store(url):
    assert not database_url.is_sqlite(url)
    assert database_url.server_url(url) == url


@pytest.mark.parametrize("url", ["mssql://user:secret@db/keylime", "oracle://u:secret@db", "nonsense"])
def test_other_engines_are_refused_without_credentials(url):
    with pytest.raises(ConfigError) as err:
        database_url.server_url(url)
    assert "secret" not in str(err.value)
    assert str(err.value).endswith("this command opens SQLite, PostgreSQL and MySQL/MariaDB verifier databases only")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://keylime:s3cret@db:5432/keylime", "postgresql://keylime:***@db:5432/keylime"),
    ("mysql+pymysql://k:p%40ss%3Aw%2Frd@db/keylime?charset=utf8mb4", "mysql+pymysql://k:***@db/keylime?charset=utf8mb4"),
    ("postgresql://k:a@b@db/x", "postgresql://k:***@db/x"),
    ("postgresql://keylime@db/keylime?password=s3cret&sslmode=require",
     "postgresql://keylime@db/keylime?password=***&sslmode=require"),
    ("postgresql:///keylime?host=/run/postgresql", "postgresql:///keylime?host=/run/postgresql"),
])
def test_masked_url_never_shows_the_password(url, shown):
    assert database_url.masked(url) == shown


def test_redact_removes_every_spelling_of_the_password():
    url = "mysql+pymysql://k:p%40ss%3Aw%2Frd@db/keylime"
    text = "denied for p@ss:w/rd, p%40ss%3Aw%2Frd and p%40ss%3Aw%2Frd"
    assert database_url.redact(text, url) == "denied for ***, *** and ***"
