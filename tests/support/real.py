"""Skip-or-fail for tests that need a real component (systemd-nspawn, QEMU, a database server...).

Locally a missing component is a skip with its reason printed (pytest -ra shows it); in CI
(CI=true) it is a failure, because CI must never skip the real-component tests silently.
"""

import os

import pytest


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition, reason):
    """Skip locally, fail in CI, when condition is false."""
    if condition:
        return
    if in_ci():
        pytest.fail("real component unavailable in CI: " + reason, pytrace=False)
    pytest.skip(reason)
