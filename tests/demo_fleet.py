"""The demo fleet: one agent per interesting case, for the README's first command and the tests."""

from tests.support.verifier_db import agent

NOT_REACHABLE = "internal.verifier.not_reachable"
NOT_REACHABLE_V = "internal.verifier.not_reachable_v"


def rows():
    return [
        agent("agent-01-healthy", 3, attestation_count=42, last_successful_attestation=1764760000),
        agent("agent-02-unreachable", 7, NOT_REACHABLE, ip="10.10.2.62", attestation_count=17,
              last_successful_attestation=1764750000),
        agent("agent-03-unreachable-v", 7, NOT_REACHABLE_V, ip="10.10.2.63"),
        agent("agent-04-no-quote", 7, "internal.verifier.no_quote", ip="10.10.2.64"),
        agent("agent-05-no-v", 7, "internal.verifier.no_v"),
        agent("agent-06-version", 7, "internal.verifier.version_not_supported"),
        agent("agent-07-exception", 7, "internal.verifier.exception"),
        agent("agent-08-cause-null", 7, None),
        agent("agent-09-invalid-quote", 9, "pcr_validation.invalid_pcr_0"),
        agent("agent-10-tenant-failed", 10, None),
        agent("agent-11-other-verifier", 7, NOT_REACHABLE, verifier="verifier-b", ip="10.10.3.11"),
        agent("agent-12-no-verifier-id", 7, NOT_REACHABLE, verifier=None, ip="10.10.3.12"),
        agent("agent-13-other-verifier-healthy", 3, verifier="verifier-b"),
    ]
