# Entry points named in the README.
.PHONY: demo check bench e2e e2e-real-verifier bench-fleet deb clean

demo:   ## the reset on a built-in demo database: table before, dry run, reset, table after
	python3 tests/demo.py

check:  ## the whole test suite (installs what it needs; .ci/run calls this)
	tests/run

bench:  ## A/B benchmark of the reset against the write-up's shell reset (BENCH_ARGS="--sizes 10,1000")
	python3 bench/run.py $(BENCH_ARGS)

e2e:    ## end-to-end proofs with reports: the real Keylime verifier, and a real power cut in a VM
	tests/install-deps
	.venv/bin/python -m pytest -s tests/test_real_verifier.py tests/test_power_cut.py

deb:    ## the Debian package, built from a clean copy of the tree into dist/ (docs/debian.md)
	rm -rf build/deb dist/keylime-reboot-fix_* && mkdir -p build/deb/keylime-reboot-fix dist
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp -P --parents -t build/deb/keylime-reboot-fix
	cd build/deb/keylime-reboot-fix && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root dpkg-buildpackage -us -uc -b
	cp build/deb/*.deb build/deb/*.changes build/deb/*.buildinfo dist/
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root lintian --fail-on error,warning dist/*.changes
	@ls -1 dist/*.deb

e2e-real-verifier:  ## the reset against the real Keylime 7.14.3 verifier: what was reset, measured times
	tests/e2e-real-verifier

bench-fleet:  ## time and peak memory of the reset on 60 000 rows in real PostgreSQL and MariaDB
	tests/install-deps && .venv/bin/python bench/fleet_servers.py 20000

clean:
	rm -rf .venv .pytest_cache build dist deb_dist *.egg-info
