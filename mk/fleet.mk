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

install-node-exporter:
	@tools/apt-need --no-start $(NODE_EXPORTER):prometheus-node-exporter

install-fleet-packages: install-node-exporter
	@tools/apt-need --no-start /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client git:git

test-fleet: venv install-fleet-packages
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	$(BIN)/pytest -q -m "slow or not slow" tests/unit/test_metrics.py \
		tests/integration/test_metrics.py tests/integration/test_cli_scripting.py tests/fleet

ansible-collection: venv
	$(BIN)/ansible-galaxy collection build ansible --output-path build --force
