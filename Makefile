# Entry points named in the README.
.PHONY: demo check bench e2e e2e-real-verifier bench-fleet deb clean

demo:   ## the reset on a built-in demo database: dry run, reset, table before and after
	python3 tests/demo.py

check:  ## the whole test suite (installs what it needs; .ci/run calls this)
	tests/run

e2e:    ## end-to-end proofs with reports: the real Keylime verifier, and a real power cut in a VM
	tests/install-deps
	.venv/bin/python -m pytest -s tests/test_real_verifier.py tests/test_power_cut.py

e2e-real-verifier:  ## the reset against the real Keylime 7.14.3 verifier: what was reset, measured times
	tests/e2e-real-verifier

bench-fleet:  ## time and peak memory of the reset on 60 000 rows in real PostgreSQL and MariaDB
	tests/install-deps && .venv/bin/python bench/fleet_servers.py 20000

clean:
	rm -rf .venv .pytest_cache build dist deb_dist *.egg-info
