"""keylime-reboot-fix: bring a Keylime deployment back by itself after a simultaneous reboot.

The package is standard library only at run time: it runs as the verifier's ExecStartPre on
every boot, on hosts that must not grow new dependencies.
"""

__version__ = "0.1.0"
