# Entry points named in the README.
.PHONY: demo check bench e2e e2e-real-verifier bench-fleet deb clean

demo:   ## the reset on a built-in demo database: dry run, reset, table before and after
	python3 tests/demo.py

check:  ## the whole test suite (installs what it needs; .ci/run calls this)
	tests/run

e2e-real-verifier:  ## the reset against the real Keylime 7.14.3 verifier: what was reset, measured times
	tests/e2e-real-verifier

bench-fleet:  ## time and peak memory of the reset on 60 000 rows in real PostgreSQL and MariaDB
	tests/install-deps && .venv/bin/python bench/fleet_servers.py 20000

clean:
	rm -rf .venv .pytest_cache build dist deb_dist *.egg-info
