# livefw: `make demo` and `make test` do all set-up on a fresh Debian 12 / Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian packages the tests and the demo need, as "command-or-file:package".
DEB_NEEDS := /usr/bin/dbus-daemon:dbus-daemon /usr/bin/busctl:systemd \
	/usr/bin/setpriv:util-linux /usr/bin/pkg-config:pkg-config \
	/usr/include/dbus-1.0/dbus/dbus.h:libdbus-1-dev \
	/usr/include/glib-2.0/glib.h:libglib2.0-dev

.PHONY: all deps venv demo test test-deps lint typecheck pytest bench clean

# bus-level integration tests run a second time with LIVEFW_DBUS_BACKEND=next
NEXT_BACKEND_TESTS := tests/integration/test_daemon.py \
	tests/integration/test_bus_managed_objects.py tests/integration/test_compat_wire.py

all: test

# Install missing Debian packages only (idempotent; apt-get runs only when needed).
deps:
	@tools/apt-need $(DEB_NEEDS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	touch $@

venv: deps $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy --strict -p livefw

pytest: venv
	$(BIN)/pytest -q -m "not slow"

# Extra set-up for the test suite; fragments in mk/ add prerequisites (e.g. fwupd).
test-deps:

test: venv test-deps
	@# editable_mode=strict links files, so new modules need a re-install
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict -p livefw
	$(BIN)/pytest -q -m "not slow"
	@# the bus-level integration tests again on the other D-Bus backend (issue 17 item 3)
	LIVEFW_DBUS_BACKEND=next $(BIN)/pytest -q -m "not slow" $(NEXT_BACKEND_TESTS)

demo: venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	$(BIN)/python tools/demo.py

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# Topic fragments (install/package, fwupd compatibility, robustness, benchmarks) add
# their own targets and may add prerequisites to `test-deps`.
-include mk/*.mk
