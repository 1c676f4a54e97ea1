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

# --- systemd integration (units, helpers, generator) ---------------------------------------
VERIFIER_UNIT = "keylime_verifier.service"
REGISTRAR_UNIT = "keylime_registrar.service"
AGENT_UNIT = "keylime_agent.service"
CERT_RENEWAL_UNIT = "keylime-cert-renewal.service"
OPENBAO_UNIT = "openbao.service"
# The agent's listening port: [agent] port in agent.conf (rust-keylime; TOML, also INI-readable).
AGENT_SECTION = "agent"
DEFAULT_AGENT_PORT = 9002
DEFAULT_AGENT_IP = "127.0.0.1"
AGENT_CONFIG_ENV = "KEYLIME_AGENT_CONFIG"
AGENT_OPTION_ENV_PREFIX = "KEYLIME_AGENT_"
AGENT_BASE_CONFIGS = ("/etc/keylime/agent.conf", "/usr/etc/keylime/agent.conf")
AGENT_SNIPPET_DIRS = ("/usr/etc/keylime/agent.conf.d", "/etc/keylime/agent.conf.d")
# Below systemd's default TimeoutStartSec (90 s), which also bounds the agent's ExecStartPost.
DEFAULT_AGENT_WAIT_TIMEOUT = 60.0
# OpenBao: the bao CLI's own variable names, so one environment file serves the check and renewal.
CERT_RENEWAL_CONFIG = "/etc/keylime-reboot-fix/cert-renewal.conf"
OPENBAO_ADDR_ENV = "BAO_ADDR"
OPENBAO_CACERT_ENV = "BAO_CACERT"
OPENBAO_SKIP_VERIFY_ENV = "BAO_SKIP_VERIFY"
OPENBAO_TIMEOUT_ENV = "OPENBAO_HEALTH_TIMEOUT"
CERT_RENEWAL_COMMAND_ENV = "CERT_RENEWAL_COMMAND"
DEFAULT_OPENBAO_ADDR = "https://127.0.0.1:8200"
OPENBAO_HEALTH_PATH = "/v1/sys/health"
# Short: at boot on the write-up's site OpenBao cannot be up yet (it needs SPIRE, which needs
# Keylime) and the agent waits for this check; the timer renews later.
DEFAULT_OPENBAO_TIMEOUT = 20.0
# /v1/sys/health answers: 200 active, 429 unsealed standby, 472 DR secondary, 473 performance
# standby (all unsealed); 501 not initialised; 503 sealed.
OPENBAO_UNSEALED_CODES = (200, 429, 472, 473)
OPENBAO_UNINITIALISED_CODE = 501
OPENBAO_SEALED_CODE = 503
