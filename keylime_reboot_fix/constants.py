"""The one place for Keylime's state numbers, event ids, paths and this package's defaults.

State numbers and event ids are facts of Keylime (keylime/common/states.py and the verifier's
event ids); they are named here exactly once so that no other module carries a bare 7 or 3.
"""

PROGRAM = "keylime-reset-failed"
SYSLOG_IDENT = PROGRAM

# --- Keylime agent operational states (keylime/common/states.py) ---------------------------
REGISTERED = 0
START = 1
SAVED = 2
GET_QUOTE = 3
GET_QUOTE_RETRY = 4
PROVIDE_V = 5
PROVIDE_V_RETRY = 6
FAILED = 7
TERMINATED = 8
INVALID_QUOTE = 9
TENANT_FAILED = 10

STATE_NAMES = {
    REGISTERED: "REGISTERED",
    START: "START",
    SAVED: "SAVED",
    GET_QUOTE: "GET_QUOTE",
    GET_QUOTE_RETRY: "GET_QUOTE_RETRY",
    PROVIDE_V: "PROVIDE_V",
    PROVIDE_V_RETRY: "PROVIDE_V_RETRY",
    FAILED: "FAILED",
    TERMINATED: "TERMINATED",
    INVALID_QUOTE: "INVALID_QUOTE",
    TENANT_FAILED: "TENANT_FAILED",
}

# The reset moves rows from RESET_FROM to RESET_TO and from nothing else to nothing else.
RESET_FROM = FAILED
RESET_TO = GET_QUOTE

# --- Why a row is FAILED: the verifier's last_event_id --------------------------------------
EVENT_NOT_REACHABLE = "internal.verifier.not_reachable"
EVENT_NOT_REACHABLE_V = "internal.verifier.not_reachable_v"
# The only causes reset by default: quote or V-key retries exhausted because the agent did not
# answer. Every other cause of FAILED (no_quote, no_v, version_not_supported, exception) is not
# connectivity and is never reset without --any-cause.
CONNECTIVITY_EVENTS = (EVENT_NOT_REACHABLE, EVENT_NOT_REACHABLE_V)

# --- The verifier's database and configuration (keylime/config.py, keylime/db/keylime_db.py) -
VERIFIER_TABLE = "verifiermain"
DEFAULT_KEYLIME_DIR = "/var/lib/keylime"
VERIFIER_DB_FILE = "cv_data.sqlite"
DEFAULT_VERIFIER_UUID = "default"
VERIFIER_BASE_CONFIGS = ("/etc/keylime/verifier.conf", "/usr/etc/keylime/verifier.conf")
VERIFIER_SNIPPET_DIRS = ("/usr/etc/keylime/verifier.conf.d", "/etc/keylime/verifier.conf.d")
VERIFIER_CONFIG_ENV = "KEYLIME_VERIFIER_CONFIG"
VERIFIER_OPTION_ENV_PREFIX = "KEYLIME_VERIFIER_"
KEYLIME_DIR_ENV = "KEYLIME_DIR"
VERIFIER_SECTION = "verifier"
# Names a running verifier process can have in its command line.
VERIFIER_PROCESS_NAMES = ("keylime_verifier", "keylime-verifier", "keylime.cmd.verifier")

# --- This package's own state and defaults -------------------------------------------------
STATE_DIR = "/var/lib/keylime-reboot-fix"
STATE_FILE = STATE_DIR + "/reset-state.jsonl"
DEFAULT_MAX_RESETS = 3
# Well below the verifier unit's 60 s start timeout, which also bounds ExecStartPre.
DEFAULT_BUSY_TIMEOUT = 10.0
