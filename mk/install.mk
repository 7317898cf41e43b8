# Installing livefw as a system service, and its packages (issue 8).
#
#   make install [DESTDIR=/tmp/root] [PREFIX=/usr]   the FHS tree (docs/installing.md)
#   make package                                     the .deb in build/deb/ (+ lintian)
#   make rpm-check                                   `rpmspec -P` on packaging/livefw.spec
#
# The Python code and its dependencies go into a private virtual environment in
# $(PREFIX)/lib/livefw, made with Debian's own interpreter (Debian 12 ships no
# cabarchive); $(PREFIX)/sbin/livefwd and $(PREFIX)/bin/livefw link into it.
# The test (tests/integration/test_install.py), debian/rules and the RPM spec all run
# this same target.

PREFIX ?= /usr
SYSCONFDIR ?= /etc
DESTDIR ?=
#: the interpreter of the private venv: the distribution's, never a pyenv or the dev .venv.
INSTALL_PYTHON ?= /usr/bin/python3.11
#: byte-compile the venv (the .deb compiles in postinst instead: no .pyc in the package).
BYTECOMPILE ?= yes
#: extra pip options (e.g. --no-index --find-links DIR for an offline build).
PIP_INSTALL_OPTS ?=

LIVEFW_LIB := $(PREFIX)/lib/livefw
INSTALL_ROOT := $(DESTDIR)$(LIVEFW_LIB)
#: Debian 12 (debhelper 13.11, lintian) wants units in /lib/systemd/system: debian/rules says so.
UNITDIR ?= $(PREFIX)/lib/systemd/system
DBUS_DIR := $(PREFIX)/share/dbus-1
DOCDIR := $(PREFIX)/share/doc/livefw
PLUGIN_DOCS := $(wildcard plugins/*/README.md)
DEB_PACKAGE_NEEDS := /usr/bin/dpkg-buildpackage:dpkg-dev /usr/bin/dh:debhelper \
	/usr/bin/lintian:lintian /usr/bin/fakeroot:fakeroot /usr/bin/systemd-analyze:systemd \
	/usr/lib/python3.11/ensurepip/__init__.py:python3.11-venv

.PHONY: install package package-deps rpm-check rpm-deps fwupd-unit

install:
	@test -x "$(INSTALL_PYTHON)" || { \
		echo "install: $(INSTALL_PYTHON) is missing (apt-get install python3.11-venv)" >&2; exit 1; }
	@case "$(PREFIX)" in /*) ;; *) echo "install: PREFIX must be absolute" >&2; exit 1;; esac
	@# a fresh venv every time: an upgrade never mixes old and new dependencies
	rm -rf "$(INSTALL_ROOT)"
	$(INSTALL_PYTHON) -m venv "$(INSTALL_ROOT)"
	"$(INSTALL_ROOT)/bin/python" -m pip install -q --no-compile --no-warn-script-location \
		--disable-pip-version-check $(PIP_INSTALL_OPTS) .
	"$(INSTALL_ROOT)/bin/python" -m pip uninstall -q -y pip setuptools
	@# the venv is made where it is staged; make it right for where it runs
	find "$(INSTALL_ROOT)/bin" -type f ! -name livefw ! -name livefwd -delete
	rm -f "$(INSTALL_ROOT)"/lib/python3*/site-packages/livefw-*.dist-info/direct_url.json
	@if [ -n "$(DESTDIR)" ]; then \
		grep -rlI --null -F "$(DESTDIR)" "$(INSTALL_ROOT)/bin" "$(INSTALL_ROOT)/pyvenv.cfg" \
			| xargs -0 -r sed -i "s|$(DESTDIR)$(LIVEFW_LIB)|$(LIVEFW_LIB)|g"; \
	fi
	@if [ "$(BYTECOMPILE)" = yes ]; then \
		echo "byte-compiling $(LIVEFW_LIB)"; \
		"$(INSTALL_ROOT)/bin/python" -m compileall -q -j0 \
			$(if $(DESTDIR),-s "$(DESTDIR)" -p /) "$(INSTALL_ROOT)/lib" >/dev/null; \
	fi
	install -d "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/sbin"
	ln -sfn ../lib/livefw/bin/livefw "$(DESTDIR)$(PREFIX)/bin/livefw"
	ln -sfn ../lib/livefw/bin/livefwd "$(DESTDIR)$(PREFIX)/sbin/livefwd"
	@# systemd units, with the executables' paths under PREFIX
	install -d "$(DESTDIR)$(UNITDIR)"
	for unit in livefwd.service livefw-activate.service livefw-activate.timer \
		livefw-metrics.service livefw-metrics.timer; do \
		sed -e "s|/usr/sbin/livefwd|$(PREFIX)/sbin/livefwd|g" \
			-e "s|/usr/bin/livefw |$(PREFIX)/bin/livefw |g" \
			-e "s|/usr/share/doc/livefw|$(DOCDIR)|g" \
			"systemd/$$unit" > "$(DESTDIR)$(UNITDIR)/$$unit"; \
		chmod 644 "$(DESTDIR)$(UNITDIR)/$$unit"; \
	done
	install -Dm644 systemd/livefw.tmpfiles "$(DESTDIR)$(PREFIX)/lib/tmpfiles.d/livefw.conf"
	@# D-Bus: system bus policy, activation file, interface XML; polkit actions. Only
	@# livefw's own names: dbus/org.freedesktop.fwupd.* (the fwupd-compat policy and
	@# fwupd's API) would clash with the fwupd package's files, so they go to the docs
	@# as examples for machines where livefwd replaces fwupd's daemon.
	install -d "$(DESTDIR)$(DBUS_DIR)/system.d" "$(DESTDIR)$(DBUS_DIR)/system-services" \
		"$(DESTDIR)$(DBUS_DIR)/interfaces" "$(DESTDIR)$(PREFIX)/share/polkit-1/actions"
	install -m644 dbus/org.livefw.*.conf "$(DESTDIR)$(DBUS_DIR)/system.d/"
	for service in dbus/org.livefw.*.service; do \
		sed -e "s|/usr/sbin/livefwd|$(PREFIX)/sbin/livefwd|g" "$$service" \
			> "$(DESTDIR)$(DBUS_DIR)/system-services/$$(basename $$service)"; \
		chmod 644 "$(DESTDIR)$(DBUS_DIR)/system-services/$$(basename $$service)"; \
	done
	install -m644 dbus/org.livefw.*.xml "$(DESTDIR)$(DBUS_DIR)/interfaces/"
	install -m644 dbus/org.livefw.*.policy "$(DESTDIR)$(PREFIX)/share/polkit-1/actions/"
	@if ls dbus/org.freedesktop.fwupd.* >/dev/null 2>&1; then \
		install -d "$(DESTDIR)$(DOCDIR)/examples/fwupd-compat" && \
		install -m644 dbus/org.freedesktop.fwupd.* "$(DESTDIR)$(DOCDIR)/examples/fwupd-compat/"; \
	fi
	@# the default configuration; an administrator's file is never overwritten
	@if [ -e "$(DESTDIR)$(SYSCONFDIR)/livefw/livefw.conf" ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/livefw/livefw.conf"; \
	else \
		install -Dm644 data/livefw.conf "$(DESTDIR)$(SYSCONFDIR)/livefw/livefw.conf"; \
	fi
	install -Dm644 docs/man/livefw.1 "$(DESTDIR)$(PREFIX)/share/man/man1/livefw.1"
	install -Dm644 docs/man/livefwd.8 "$(DESTDIR)$(PREFIX)/share/man/man8/livefwd.8"
	install -Dm644 README.md "$(DESTDIR)$(DOCDIR)/README.md"
	install -Dm644 docs/installing.md "$(DESTDIR)$(DOCDIR)/installing.md"
	for doc in $(PLUGIN_DOCS); do \
		install -Dm644 "$$doc" "$(DESTDIR)$(DOCDIR)/$$doc"; \
	done
	@# the web console page (mk/cockpit.mk); the .deb moves it to livefw-cockpit
	$(MAKE) --no-print-directory install-cockpit

# Debian packages `make package` needs (idempotent: apt-get only when one is missing).
package-deps:
	@tools/apt-need $(DEB_PACKAGE_NEEDS)

# The .deb: dpkg-buildpackage on a copy of the tree (debian/ must sit at the top of the
# source; the repository keeps it in packaging/debian), then lintian. Result: build/deb/.
DEB_BUILD := build/deb
package: package-deps
	rm -rf "$(DEB_BUILD)"
	mkdir -p "$(DEB_BUILD)/src"
	git ls-files -z --cached --others --exclude-standard \
		| grep -zv '^packaging/debian/' \
		| xargs -0 cp --parents -t "$(DEB_BUILD)/src" 2>/dev/null || true
	cp -r packaging/debian "$(DEB_BUILD)/src/debian"
	cd "$(DEB_BUILD)/src" && dpkg-buildpackage -us -uc -b
	lintian --fail-on error --info \
		"$(DEB_BUILD)"/livefw_*.changes
	@ls -l "$(DEB_BUILD)"/*.deb

rpm-deps:
	@tools/apt-need /usr/bin/rpmspec:rpm

# The RPM spec is checked by parsing it (an RPM build needs an RPM distribution).
rpm-check: rpm-deps
	rpmspec -P packaging/livefw.spec > /dev/null
	@echo "packaging/livefw.spec parses"

# `make test` runs `make install` into a temp DESTDIR (tests/integration/test_install.py):
# it needs Debian's python3.11 with ensurepip.
test-deps: install-test-deps
.PHONY: install-test-deps
install-test-deps:
	@tools/apt-need /usr/lib/python3.11/ensurepip/__init__.py:python3.11-venv

# fwupd's own unit, to compare exposure scores (tests/integration/test_install.py uses
# the installed fwupd.service when fwupd is installed, else this copy extracted from
# Debian's fwupd package without installing it). A failure only skips that comparison.
FWUPD_UNIT_DIR := build/fwupd-unit
test-deps: fwupd-unit
fwupd-unit:
	@if [ ! -e /usr/lib/systemd/system/fwupd.service ] && \
	    [ ! -e /lib/systemd/system/fwupd.service ] && \
	    [ ! -e "$(FWUPD_UNIT_DIR)/fwupd.service" ] && command -v apt-get >/dev/null; then \
		rm -rf "$(FWUPD_UNIT_DIR)" && mkdir -p "$(FWUPD_UNIT_DIR)/x" && \
		( cd "$(FWUPD_UNIT_DIR)" && \
		  { apt-get download -q fwupd >/dev/null 2>&1 || \
		    { apt-get update -qq && apt-get download -q fwupd >/dev/null; }; } && \
		  dpkg-deb -x fwupd_*.deb x && \
		  cp "$$(find x -name fwupd.service -path '*systemd/system/*' | head -1)" fwupd.service && \
		  rm -rf x fwupd_*.deb && echo "fetched fwupd.service from Debian's fwupd package" ) || \
		echo "could not fetch fwupd.service: the exposure comparison will be skipped"; \
	fi

# The .deb on a real systemd 252 in a Debian 12 container (packaging/system-test.sh):
# slow (debootstrap once, then a boot), root only, not part of `make test`.
SYSTEM_TEST_NEEDS := /usr/sbin/debootstrap:debootstrap /usr/bin/systemd-nspawn:systemd-container
.PHONY: system-test
system-test: package-deps
	@tools/apt-need $(SYSTEM_TEST_NEEDS)
	@[ -n "$(wildcard build/deb/livefw_*.deb)" ] || $(MAKE) package
	bash packaging/system-test.sh
