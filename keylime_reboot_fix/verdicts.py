"""The rule: which FAILED row may be given one more chance, and why every other one may not.

Pure functions, no I/O: the whole security decision of the package is here and nowhere else.
"""

from . import constants as C

RESET = "reset"
OTHER_CAUSE = "other-cause"
OTHER_VERIFIER = "other-verifier"
NO_VERIFIER = "no-verifier"
CAP_REACHED = "cap-reached"


class Rule:
    """The selection for one run: this verifier's uuid, the causes that count, the cap."""

    def __init__(self, uuid, any_cause=False, max_resets=C.DEFAULT_MAX_RESETS):
        self.uuid = uuid
        self.any_cause = any_cause
        self.max_resets = max_resets
        # None means "every cause": the SQL re-check then tests state and verifier only.
        self.events = None if any_cause else C.CONNECTIVITY_EVENTS

    def classify(self, verifier_id, event, attestation_count, last_success, previous):
        """(verdict, consecutive resets after this run) for one row in state FAILED.

        previous is (resets, attestation_count, last_successful_attestation) recorded at the
        agent's last reset, or None. A changed attestation_count or last_successful_attestation
        means the agent attested since, which starts its count again.
        """
        if verifier_id is None:
            return NO_VERIFIER, 0
        if verifier_id != self.uuid:
            return OTHER_VERIFIER, 0
        if not self.any_cause and event not in C.CONNECTIVITY_EVENTS:
            return OTHER_CAUSE, 0
        consecutive = 0
        if previous is not None and (previous[1], previous[2]) == (attestation_count, last_success):
            consecutive = previous[0]
        if consecutive >= self.max_resets:
            return CAP_REACHED, consecutive
        return RESET, consecutive + 1


def reason(verdict, event, verifier_id, resets, max_resets):
    """One human sentence for the table and the log."""
    if verdict == RESET:
        return "%s; reset %d of %d without attestation" % (event or "cause not recorded", resets, max_resets)
    if verdict == OTHER_CAUSE:
        return "cause %s is not unreachability" % (event or "NULL")
    if verdict == OTHER_VERIFIER:
        return "belongs to verifier '%s'" % verifier_id
    if verdict == NO_VERIFIER:
        return "verifier_id is NULL: no verifier polls it"
    return "reset %d times without a successful attestation since (max %d)" % (resets, max_resets)
