# The web console page "Firmware" (issue 19): cockpit/ holds plain HTML/JS/CSS that
# Cockpit serves as the package "livefw"; nothing is built.
#
#   make install-cockpit [DESTDIR=...] [PREFIX=/usr]   only the page (`make install` runs it)
#   make test-web      the page in headless Chromium against cockpit-ws, livefwd --simulate
#                      and a fake systemd (tests/web); installs Debian's cockpit-ws,
#                      cockpit-bridge, chromium and chromium-driver when missing.
#                      Screenshots land in $(WEB_SHOTS). Not part of `make test` (~2 min).

COCKPIT_FILES := cockpit/manifest.json cockpit/index.html cockpit/firmware.js cockpit/firmware.css
COCKPIT_PKGDIR = $(PREFIX)/share/cockpit/livefw
WEB_NEEDS := /usr/lib/cockpit/cockpit-ws:cockpit-ws /usr/bin/cockpit-bridge:cockpit-bridge \
	/usr/lib/chromium/chromium:chromium /usr/bin/chromedriver:chromium-driver
WEB_SHOTS ?= build/web

.PHONY: install-cockpit web-deps test-web

install-cockpit:
	install -d "$(DESTDIR)$(COCKPIT_PKGDIR)"
	install -m644 $(COCKPIT_FILES) "$(DESTDIR)$(COCKPIT_PKGDIR)/"

# apt-get with service starts blocked (as mk/compat.mk does): cockpit.socket must not
# start on the build machine.
web-deps:
	@blocker=""; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
		$$SUDO chmod 755 /usr/sbin/policy-rc.d; blocker=1; \
	fi; \
	tools/apt-need $(WEB_NEEDS); status=$$?; \
	[ -z "$$blocker" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
	exit $$status

test-web: venv web-deps
	$(BIN)/pip install -q -e '.[test,web]' --config-settings editable_mode=strict
	LIVEFW_WEB_TEST=1 LIVEFW_WEB_SHOTS=$(abspath $(WEB_SHOTS)) $(BIN)/pytest -q tests/web
	@echo "screenshots: $(WEB_SHOTS)/"
