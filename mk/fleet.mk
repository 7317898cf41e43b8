# Fleets (issue 20): Prometheus metrics and the livefw.firmware Ansible collection.
#
#   make test-fleet        installs Debian's prometheus-node-exporter and openssh-server
#                          (their services are not started), then runs the metrics tests
#                          (node_exporter included), `ansible-test sanity` on ansible/,
#                          and the canary rollout over 8 simulated hosts (one over SSH)
#   make ansible-collection  builds build/livefw-firmware-<version>.tar.gz
#
# `make test` runs the metrics tests and installs node_exporter only when CI=true and it
# is missing (elsewhere that one test skips, saying so); the Ansible tests take minutes,
# so only `make test-fleet` runs them.

.PHONY: node-exporter install-node-exporter install-fleet-packages test-fleet ansible-collection

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

install-fleet-packages: install-node-exporter
	@if [ ! -x /usr/sbin/sshd ]; then \
		echo "installing Debian package: openssh-server (its service is not started)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		blocker=""; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
			$$SUDO chmod 755 /usr/sbin/policy-rc.d; blocker=1; \
		fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			openssh-server openssh-client; status=$$?; \
		[ -z "$$blocker" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
		exit $$status; \
	fi
	@tools/apt-need git:git ssh-keygen:openssh-client

test-fleet: venv install-fleet-packages
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	$(BIN)/pytest -q -m "slow or not slow" tests/unit/test_metrics.py \
		tests/integration/test_metrics.py tests/integration/test_cli_scripting.py tests/fleet

ansible-collection: venv
	$(BIN)/ansible-galaxy collection build ansible --output-path build --force
