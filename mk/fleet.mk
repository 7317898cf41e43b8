# Fleets (issue 20): Prometheus metrics now; the Ansible collection joins later.
#
#   make test-fleet    installs Debian's prometheus-node-exporter (its service is not
#                      started) and runs the metrics tests, node_exporter included
#
# `make test` installs the package only when CI=true and it is missing; elsewhere the
# node_exporter test skips with a message saying so.

.PHONY: node-exporter install-node-exporter test-fleet

NODE_EXPORTER := /usr/bin/prometheus-node-exporter

test-deps: node-exporter

node-exporter:
	@if [ "$${CI:-}" = "true" ] && [ ! -x $(NODE_EXPORTER) ]; then \
		$(MAKE) --no-print-directory install-node-exporter; \
	fi

# policy-rc.d keeps the package's postinst from starting the service on this machine.
install-node-exporter:
	@if [ ! -x $(NODE_EXPORTER) ]; then \
		echo "installing Debian package: prometheus-node-exporter (its service is not started)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		blocker=""; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d; blocker=1; \
		fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			prometheus-node-exporter; status=$$?; \
		[ -z "$$blocker" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
		exit $$status; \
	fi

test-fleet: venv install-node-exporter
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	$(BIN)/pytest -q tests/unit/test_metrics.py tests/integration/test_metrics.py
