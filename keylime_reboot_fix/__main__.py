"""python3 -m keylime_reboot_fix: the same as keylime-reset-failed."""
import sys

from keylime_reboot_fix.cli import main

sys.exit(main())
