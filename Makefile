# Entry points named in the README.
.PHONY: demo check bench e2e e2e-real-verifier deb clean

demo:   ## the reset on a built-in demo database: dry run, reset, table before and after
	python3 tests/demo.py

check:  ## the whole test suite (installs what it needs; .ci/run calls this)
	tests/run

bench:  ## A/B benchmark of the reset against the write-up's shell reset (BENCH_ARGS="--sizes 10,1000")
	python3 bench/run.py $(BENCH_ARGS)

e2e-real-verifier:  ## the reset against the real Keylime 7.14.3 verifier: what was reset, measured times
	tests/e2e-real-verifier

clean:
	rm -rf .venv .pytest_cache build dist deb_dist *.egg-info
