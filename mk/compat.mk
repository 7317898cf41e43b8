# fwupd compatibility (issue 7): real fwupd clients against livefwd --fwupd-compat.
#
#   make test-compat   installs Debian's fwupd package (for its client: fwupdmgr,
#                      libfwupd and the polkit policy file) and runs the compat,
#                      cabinet, jcat and remote tests, including the sweep of every
#                      fwupdmgr subcommand (test_compat_commands.py, marked slow)
#
# `make test` installs the package only when CI=true and fwupdmgr is missing;
# elsewhere the fwupdmgr tests skip with a message saying so. The fwupd daemon is
# never started: the install blocks service starts (policy-rc.d), and the tests'
# private buses load no service directories, so nothing can activate it.

.PHONY: fwupd-client install-fwupd-client test-compat

test-deps: fwupd-client

fwupd-client:
	@if [ "$${CI:-}" = "true" ] && ! command -v fwupdmgr >/dev/null; then \
		$(MAKE) --no-print-directory install-fwupd-client; \
	fi

#: what the compat tests need from Debian: the fwupd client and openssl (test keys);
#: --no-start keeps the package from starting fwupd.service (tools/apt-need).
install-fwupd-client:
	@tools/apt-need --no-start fwupdmgr:fwupd openssl:openssl

test-compat: venv install-fwupd-client
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	$(BIN)/pytest -q tests/unit/test_cabinet*.py tests/unit/test_jcat*.py \
		tests/unit/test_remotes*.py tests/integration/test_compat*.py

# gnome-firmware 43.2 and gnome-software 43.5 (Debian 12) under Xvfb against livefwd
# --fwupd-compat; not part of `make test`. The screenshots land in $(GUI_SHOTS) for a
# person to look at (gnome-software's Update button on a directory remote; a staged PFRU
# update in gnome-firmware). --no-start: no package service starts on the build machine.
.PHONY: test-gui
GUI_SHOTS ?= build/gui

test-gui: venv install-fwupd-client
	@tools/apt-need --no-start gnome-firmware:gnome-firmware gnome-software:gnome-software \
		Xvfb:xvfb import:imagemagick xdotool:xdotool xprop:x11-utils xauth:xauth
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	LIVEFW_GUI_TEST=1 LIVEFW_GUI_SHOTS=$(abspath $(GUI_SHOTS)) $(BIN)/pytest -q tests/gui
	@echo "screenshots: $(GUI_SHOTS)/gnome-firmware-livefw.png gnome-firmware-staged.png" \
		"gnome-firmware-upgraded.png gnome-software-update.png gnome-software-installed.png"
