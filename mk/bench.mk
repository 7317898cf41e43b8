# Benchmarks beside fwupd (issue 10): never part of `make test`.
#
#   make bench         full run (about 20-30 min): bench/REPORT.md, bench/results.json
#   make bench-quick   BENCH_QUICK=1: fewer calls and starts, short idle (under 3 min);
#                      writes bench/REPORT-quick.md and bench/results-quick.json
#   make bench-report  rewrite bench/REPORT.md from bench/results.json (after editing
#                      bench/NOTES.md)
#   make test-fast     the test suite on the dbus-fast backend (LIVEFW_DBUS_BACKEND=fast)
#
# bench/run.py installs Debian's fwupd itself when /usr/libexec/fwupd/fwupd is missing
# (apt-get, service starts blocked); dbus-fast (the `fast` extra) is added to the venv
# here so both backends are measured.

.PHONY: bench-deps bench-quick bench-report test-fast

bench: bench-deps

bench-deps: venv
	@$(BIN)/python -c 'import dbus_fast' 2>/dev/null || \
		$(BIN)/pip install -q -e '.[test,fast]' --config-settings editable_mode=strict

bench-quick: bench-deps
	BENCH_QUICK=1 $(BIN)/python bench/run.py

bench-report: venv
	$(BIN)/python bench/run.py --report

# test_install builds a fresh venv from the package without extras: with the variable
# set, its livefwd rightly refuses to start without dbus-fast, so it is left out here.
test-fast: bench-deps
	$(BIN)/pip install -q -e '.[test,fast]' --config-settings editable_mode=strict --no-deps
	LIVEFW_DBUS_BACKEND=fast $(BIN)/pytest -q -m "not slow" --deselect \
		tests/integration/test_install.py::test_installed_venv_runs_the_daemon_and_loads_every_plugin
