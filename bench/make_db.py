"""Builds (and caches) realistic Keylime verifier databases for the reset benchmark.

The schema is Keylime 7.14.3's own (tests/support/verifier_db.py); the rows carry what a real
fleet's rows carry and at realistic sizes (PEM mTLS certificate, public key, AK, double-encoded
tpm_policy, long meta_data, shared runtime and measured-boot policies), because the cost of a
full-table scan is the cost of reading every page, and small fake rows would hide it.

A database is built once per (generator version, schema, size, seed) and cached under
CACHE_DIR; a manifest beside it records the exact expected counts of each row class, so the
benchmark can check that each command reset exactly the rows it should.

Usage: python3 bench/make_db.py 10 1000 100000 1000000   (prints the cached paths)
"""

import base64
import hashlib
import json
import os
import random
import sqlite3
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from keylime_reboot_fix import constants as C  # noqa: E402
from tests.support import verifier_db  # noqa: E402

# Bump when the generated rows change: it is part of the cache key.
GENERATOR_VERSION = "1"
CACHE_DIR = os.environ.get("KRF_BENCH_CACHE", "/var/tmp/keylime-reboot-fix-bench")
SEED = 20260220

# Row classes and their share of the fleet (each at least one row, so that even 10 agents
# exercise every class). "reset_by" says which command must move the class from 7 to 3.
CLASSES = (
    # name,            share,  state,             events,                            reset by
    ("unreachable",    0.030, C.FAILED,          (C.EVENT_NOT_REACHABLE,),          "AB"),
    ("failed_other",   0.005, C.FAILED,          ("internal.verifier.no_quote",
                                                  "internal.verifier.exception",
                                                  "internal.verifier.no_v",
                                                  "internal.verifier.version_not_supported"), "B"),
    ("invalid_quote",  0.005, C.INVALID_QUOTE,   ("pcr_validation.invalid_pcr_0",
                                                  "measured_boot.invalid_pcr_0",
                                                  "ima.validation.ima-ng.not_in_allowlist",
                                                  "qoute_validation.quote_validation"), ""),
    ("tenant_failed",  0.002, C.TENANT_FAILED,   (None,),                           ""),
    # Healthy rows that were FAILED once and reactivated: last_event_id is never cleared.
    ("stale_event",    0.010, C.GET_QUOTE,       (C.EVENT_NOT_REACHABLE,),          ""),
)
HEALTHY = "healthy"


def class_counts(n):
    """{class name: row count} for a fleet of n agents; the rest are healthy GET_QUOTE rows."""
    counts = {name: max(1, int(n * share + 0.5)) for name, share, *_ in CLASSES}
    counts[HEALTHY] = n - sum(counts.values())
    if counts[HEALTHY] < 0:
        raise ValueError("fleet too small: %d agents" % n)
    return counts


def expected_resets(n):
    """Rows each command must move from FAILED to GET_QUOTE on a pristine database."""
    counts = class_counts(n)
    return {cmd: sum(counts[name] for name, *_, by in CLASSES if cmd in by) for cmd in "AB"}


# --- realistic column values -------------------------------------------------------------------

def _pem(kind, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)


def _pools(rng):
    """Pools of large values (drawn per row by index): certificates, keys, policies, metadata."""
    def rb(k):
        return bytes(rng.getrandbits(8) for _ in range(k))
    # RSA-2048 SubjectPublicKeyInfo is 294 bytes DER (451 characters of PEM).
    pubkeys = [_pem("PUBLIC KEY", b"\x30\x82\x01\x22" + rb(290)) for _ in range(61)]
    # An agent's self-signed mTLS certificate: 850 to 1100 bytes DER.
    certs = [_pem("CERTIFICATE", b"\x30\x82\x03\x9e" + rb(rng.randint(846, 1096))) for _ in range(59)]
    # TPM2B_PUBLIC of an RSA AK, base64.
    aks = [base64.b64encode(b"\x01\x18\x00\x01\x00\x0b" + rb(274)).decode() for _ in range(53)]
    vs = [base64.b64encode(rb(32)).decode() for _ in range(67)]
    tpm_policies = []
    for _ in range(7):
        pcrs = {str(p): ["%064x" % rng.getrandbits(256)] for p in rng.sample([0, 1, 2, 3, 4, 5, 7, 15], 4)}
        pcrs["mask"] = "0x%x" % sum(1 << int(p) for p in pcrs)
        # Keylime stores tpm_policy double-encoded: a JSON string holding JSON.
        tpm_policies.append(json.dumps(json.dumps(pcrs)))
    sites = ["fra1", "ams2", "lon3", "par1", "dub2", "waw1"]
    roles = ["spire-server", "openbao", "k8s-worker", "k8s-control", "edge-gw", "db-replica"]
    metas = []
    for k in range(71):
        size = 200 + k * 25  # 200 .. 1950 characters: "long meta_data"
        meta = {
            "cert_serial": rng.getrandbits(120),
            "subject": "CN=agent,OU=attestation,O=Example Fleet,L=%s,C=EU" % rng.choice(sites),
            "site": rng.choice(sites), "rack": "r%02d-u%02d" % (rng.randint(1, 40), rng.randint(1, 42)),
            "role": rng.choice(roles), "owner": "platform-team@example.invalid",
            "provisioned": "2025-%02d-%02dT%02d:%02d:00Z" % (rng.randint(1, 12), rng.randint(1, 28),
                                                             rng.randint(0, 23), rng.randint(0, 59)),
            "tags": ["prod", "tpm2", rng.choice(roles)],
        }
        text = json.dumps(meta)
        meta["notes"] = "x" * max(0, size - len(text) - 12)
        metas.append(json.dumps(meta))
    return pubkeys, certs, aks, vs, tpm_policies, metas


def _runtime_policy(rng, entries):
    """An IMA runtime policy (Keylime format 5-ish) of the given number of file digests."""
    digests = {"/usr/bin/prog%05d" % i: ["%064x" % rng.getrandbits(256)] for i in range(entries)}
    return json.dumps({"meta": {"version": 5, "generator": 1, "timestamp": "2025-11-01T00:00:00"},
                       "release": 0, "digests": digests, "excludes": ["boot_aggregate", "/tmp/.*"],
                       "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha256",
                                              "dm_policy": None}, "ima-buf": {},
                       "verification-keys": ""})


def _mb_policy(rng, events):
    return json.dumps({"has_secureboot": True, "scrtm_and_bios": [{"platform_firmware": [
        {"sha256": "0x%064x" % rng.getrandbits(256)} for _ in range(events)]}],
        "pk": [], "kek": [], "db": [], "dbx": [], "mokdig": [], "mokxdig": [],
        "kernels": [{"shim_authcode_sha256": "0x%064x" % rng.getrandbits(256)}]})


COLUMNS = ("agent_id", "v", "ip", "port", "operational_state", "public_key", "tpm_policy",
           "meta_data", "revocation_key", "tpm_version", "accept_tpm_hash_algs",
           "accept_tpm_encryption_algs", "accept_tpm_signing_algs", "hash_alg", "enc_alg",
           "sign_alg", "ima_sign_verification_keys", "verifier_id", "verifier_ip", "verifier_port",
           "boottime", "ima_pcrs", "pcr10", "next_ima_ml_entry", "severity_level", "last_event_id",
           "learned_ima_keyrings", "supported_version", "ak_tpm", "mtls_cert", "attestation_count",
           "ima_policy_id", "tpm_clockinfo", "last_received_quote", "last_successful_attestation",
           "mb_policy_id", "accept_attestations", "consecutive_attestation_failures")

N_RUNTIME_POLICIES = 4
N_MB_POLICIES = 3


def _rows(n, rng):
    pubkeys, certs, aks, vs, tpm_policies, metas = _pools(rng)
    counts = class_counts(n)
    plan = []
    for name, _share, state, events, _by in CLASSES:
        plan += [(state, events)] * counts[name]
    plan += [(C.GET_QUOTE, (None,))] * counts[HEALTHY]
    rng.shuffle(plan)
    now = 1764700000
    hash_algs = json.dumps(["sha512", "sha384", "sha256"])
    enc_algs = json.dumps(["ecc", "rsa"])
    sign_algs = json.dumps(["ecschnorr", "rsassa"])
    for i, (state, events) in enumerate(plan):
        event = events[i % len(events)]
        attested = (i * 7919) % 5000
        u = rng.getrandbits(128)
        agent_id = "%08x-%04x-4%03x-a%03x-%012x" % (u >> 96, (u >> 80) & 0xFFFF, (u >> 68) & 0xFFF,
                                                     (u >> 56) & 0xFFF, u & 0xFFFFFFFFFFFF)
        yield (
            agent_id, vs[i % 67], "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255), 9002,
            state, pubkeys[i % 61], tpm_policies[i % 7], metas[i % 71], "", 2,
            hash_algs, enc_algs, sign_algs, "sha256", "rsa", "rsassa", "[]",
            C.DEFAULT_VERIFIER_UUID, "10.0.0.5", 8881, now - 86400 - i % 100000, "[10]",
            u.to_bytes(16, "big") * 2, 1200 + i % 9000, 6 if event else None, event, "{}",
            "2.1" if i % 5 else "2.2", aks[i % 53], certs[i % 59], attested,
            1 + i % N_RUNTIME_POLICIES,
            '{"clock": %d, "resetcount": %d, "restartcount": 0, "safe": 1}' % (i * 104729, i % 17),
            now - 3 - i % 60, (now - 3 - i % 60) if attested else None, 1 + i % N_MB_POLICIES,
            1, 0,
        )


def build(path, n, seed=SEED):
    """Create a fresh database of n agents at path (one transaction, executemany)."""
    rng = random.Random("%d/%d" % (seed, n))
    verifier_db.create(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # this connection only; the file stays rollback-journal
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO allowlists (id, name, tpm_policy, ima_policy, checksum, generator) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(k, "fleet-runtime-%d" % k, None, _runtime_policy(rng, 1500 + 500 * k),
                           "%064x" % rng.getrandbits(256), 1) for k in range(1, N_RUNTIME_POLICIES + 1)])
        conn.executemany("INSERT INTO mbpolicies (id, name, mb_policy) VALUES (?, ?, ?)",
                         [(k, "fleet-mb-%d" % k, _mb_policy(rng, 40 + 10 * k))
                          for k in range(1, N_MB_POLICIES + 1)])
        conn.executemany("INSERT INTO verifiermain (%s) VALUES (%s)"
                         % (", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))), _rows(n, rng))
        conn.execute("COMMIT")
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def cache_key(n, seed=SEED):
    with open(verifier_db.SCHEMA, "rb") as handle:
        schema = handle.read()
    return hashlib.sha256(b"%s\0%d\0%d\0" % (GENERATOR_VERSION.encode(), n, seed)
                          + hashlib.sha256(schema).digest()).hexdigest()[:12]


def pristine(n, cache_dir=None, seed=SEED, log=None):
    """Path of the cached pristine database of n agents, built if missing; and its manifest."""
    cache_dir = cache_dir or CACHE_DIR
    os.makedirs(cache_dir, exist_ok=True)
    base = os.path.join(cache_dir, "verifier-%d-%s" % (n, cache_key(n, seed)))
    path, manifest_path = base + ".sqlite", base + ".json"
    if os.path.exists(path) and os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            return path, json.load(handle)
    partial = base + ".partial"
    for stale in (partial, partial + "-journal"):
        if os.path.exists(stale):
            os.unlink(stale)
    start = time.monotonic()
    build(partial, n, seed)
    seconds = time.monotonic() - start
    manifest = {"agents": n, "seed": seed, "classes": class_counts(n), "expected_resets": expected_resets(n),
                "bytes": os.path.getsize(partial), "build_seconds": round(seconds, 1),
                "groups": groups(partial)}
    os.rename(partial, path)
    with open(manifest_path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    os.rename(manifest_path + ".tmp", manifest_path)
    if log:
        log("built %s: %d agents, %.1f MB in %.1f s" % (path, n, manifest["bytes"] / 1e6, seconds))
    return path, manifest


def groups(path):
    """[[state, last_event_id, verifier_id, rows], ...]: the exact picture a reset changes."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [list(r) for r in conn.execute(
            "SELECT operational_state, last_event_id, verifier_id, count(*) FROM verifiermain "
            "GROUP BY 1, 2, 3 ORDER BY operational_state, coalesce(last_event_id, ''), verifier_id")]
    finally:
        conn.close()


def main(argv):
    sizes = [int(a.replace(",", "").replace("_", "")) for a in argv] or [10, 1000, 100000, 1000000]
    for n in sizes:
        path, manifest = pristine(n, log=lambda m: print(m, file=sys.stderr))
        print("%s\t%d agents\t%.1f MB\texpected resets A=%d B=%d" % (
            path, n, manifest["bytes"] / 1e6, manifest["expected_resets"]["A"],
            manifest["expected_resets"]["B"]))


if __name__ == "__main__":
    main(sys.argv[1:])
