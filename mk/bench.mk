# Benchmarks beside fwupd (issue 10): never part of `make test`.
#
#   make bench         full run (about 23 min on an idle machine): bench/REPORT.md, bench/results.json
#   make bench-quick   BENCH_QUICK=1: fewer calls and starts, short idle (under 3 min);
#                      writes bench/REPORT-quick.md and bench/results-quick.json
#   make bench-report  rewrite bench/REPORT.md from bench/results.json (after editing
#                      bench/NOTES.md)
#   make bench-staging only the staging series (bench/staging_ab.py, a few minutes, never
#                      writes REPORT.md); STAGE_TREES="base=DIR new=." interleaves source trees
#   make bench-start   interleaved warm starts (bench/start_ab.py, about a minute, never writes
#                      REPORT.md) beside the floor, a minimal Python D-Bus daemon;
#                      TREES="base=DIR new=." interleaves source trees, FWUPD=1 adds fwupd
#   make bench-soak    only the 10-minute call loop (bench/soak.py: fwupd and livefwd at
#                      once, each on its own bus; RSS, descriptors and threads), its summary
#                      as JSON on stdout, never writes REPORT.md; SOAK_SECONDS=60 for a short one
#   make test-next     the whole test suite on the dbus-next backend (LIVEFW_DBUS_BACKEND=next;
#                      dbus-fast is the default, and `make test` runs the bus-level
#                      integration tests on dbus-next too)
#
# bench/run.py installs Debian's fwupd itself when /usr/libexec/fwupd/fwupd is missing
# (apt-get, service starts blocked); dbus-fast (the `fast` extra) is added to the venv
# (a dependency since issue 17) so both backends are measured.

.PHONY: bench-deps bench-quick bench-report bench-soak bench-staging bench-start test-next

bench: bench-deps

bench-deps: venv
	@$(BIN)/python -c 'import dbus_fast' 2>/dev/null || \
		$(BIN)/pip install -q -e '.[test,fast]' --config-settings editable_mode=strict
	@# editable_mode=strict links files: a module added since `make venv` needs a re-install
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps

bench-quick: bench-deps
	BENCH_QUICK=1 $(BIN)/python bench/run.py

bench-staging: bench-deps
	$(BIN)/python bench/staging_ab.py

bench-soak: bench-deps
	$(BIN)/python -m bench.soak

bench-start: bench-deps
	TREES="$${TREES:-new=.}" $(BIN)/python bench/start_ab.py

bench-report: venv
	$(BIN)/python bench/run.py --report

test-next: venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	LIVEFW_DBUS_BACKEND=next $(BIN)/pytest -q -m "not slow"

# issue 13: what the bus body limit saves (bench/body_limit.py; about 1 min, not asserted)
.PHONY: bench-limits
bench-limits: bench-deps
	$(BIN)/python bench/body_limit.py
