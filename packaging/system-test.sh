#!/bin/bash
# The .deb on a real systemd 252: boots a Debian 12 container (systemd-nspawn) with the
# package installed and checks what the unit files promise at run time. Run it with
# `make system-test` (root; it builds the .deb first when there is none). Slow (a
# debootstrap the first time, cached in build/system-test/base), so not in `make test`.
#
# Checks: livefwd.service starts at boot under its sandbox (capability bounding set,
# no_new_privs, seccomp); D-Bus activation starts it; the timer's service succeeds
# with nothing to do and activates on the simulated machine (journal lines); a
# live-update session survives a crash and `systemctl restart` through the fd store;
# a non-root client reads but is refused Activate by polkit and cannot own the name;
# the online exposure score; purge removes the state dir.
set -u

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
WORK=${SYSTEM_TEST_DIR:-$ROOT_DIR/build/system-test}
BASE=$WORK/base
MACHINE=$WORK/rootfs
DEB=$(ls "$ROOT_DIR"/build/deb/livefw_*.deb 2>/dev/null | tail -1)
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
passed=0
failed=0

die() { echo "system-test: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn)"
[ -n "$DEB" ] || die "no build/deb/livefw_*.deb (make package)"
command -v debootstrap >/dev/null || die "debootstrap is missing"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn is missing (systemd-container)"

check() {  # check NAME COMMAND...: one line per check, counted
    local name=$1
    shift
    if "$@" >"$WORK/last.log" 2>&1; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/     /' "$WORK/last.log" | tail -15
        failed=$((failed + 1))
    fi
}

mkdir -p "$WORK"
if [ ! -e "$BASE/.complete" ]; then
    rm -rf "$BASE"
    echo "debootstrap bookworm into $BASE (once)"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3.11,polkitd,libpam-systemd \
        bookworm "$BASE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed (see $WORK/debootstrap.log)"
    touch "$BASE/.complete"
fi
rm -rf "$MACHINE"
cp -a "$BASE" "$MACHINE"
cp "$DEB" "$MACHINE/root/livefw.deb"

nspawn=(systemd-nspawn -q --register=no --keep-unit -D "$MACHINE")
check "dpkg -i installs the package" "${nspawn[@]}" --pipe dpkg -i /root/livefw.deb

"${nspawn[@]}" -b </dev/null >"$WORK/boot.log" 2>&1 &
NSPAWN_PID=$!
cleanup() {
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "${LEADER:-}" ] && nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 30); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        kill "$NSPAWN_PID" 2>/dev/null
    fi
}
trap cleanup EXIT

# the container's init: the systemd process below our systemd-nspawn
LEADER=""
for _ in $(seq 60); do
    for pid in $(pgrep -P "$NSPAWN_PID") $(pgrep -P "$(pgrep -P "$NSPAWN_PID" | head -1)" 2>/dev/null); do
        [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = systemd ] && LEADER=$pid
    done
    [ -n "$LEADER" ] && break
    sleep 1
done
[ -n "$LEADER" ] || die "the container did not boot (see $WORK/boot.log)"
inside() { nsenter -t "$LEADER" -a "$@"; }
nobody() { inside setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
for _ in $(seq 60); do
    state=$(inside systemctl is-system-running 2>/dev/null)
    [ "$state" = running ] || [ "$state" = degraded ] && break
    sleep 1
done

main_pid() { inside systemctl show -p MainPID --value livefwd.service; }
status_field() { inside grep "^$1:" "/proc/$(main_pid)/status" | awk '{print $2}'; }
check_sandbox() {
    inside systemctl is-active livefwd.service &&
        [ "$(status_field CapBnd)" = 0000000000400200 ] &&  # LINUX_IMMUTABLE, SYS_BOOT
        [ "$(status_field NoNewPrivs)" = 1 ] &&
        [ "$(status_field Seccomp)" = 2 ]
}
check "livefwd.service runs at boot with its capabilities, no_new_privs and seccomp" check_sandbox
check "livefw plugins (real provider, inside the sandbox)" inside livefw plugins

dbus_activation() {
    inside systemctl stop livefwd.service &&
        ! inside systemctl is-active livefwd.service &&
        inside livefw get-devices &&
        inside systemctl is-active livefwd.service
}
check "a client's call starts livefwd through D-Bus activation" dbus_activation

nothing_to_do() {
    inside systemctl start livefw-activate.service &&
        inside journalctl -u livefw-activate.service -o cat | grep -q "Nothing to activate."
}
check "livefw-activate.service: exit 7 (nothing to do) is success" nothing_to_do

simulate() {
    inside mkdir -p /etc/systemd/system/livefwd.service.d &&
        inside sh -c 'printf "[Service]\nExecStart=\nExecStart=/usr/sbin/livefwd --simulate\n" \
            > /etc/systemd/system/livefwd.service.d/simulate.conf' &&
        inside systemctl daemon-reload && inside systemctl restart livefwd.service
}
check "livefwd --simulate under the same sandbox" simulate
activation() {
    inside systemctl start livefw-activate.service &&
        inside journalctl -u livefw-activate.service -o cat | grep -q "TF-A BL31 runtime: activate 2.13 -> 2.14: success"
}
check "livefw-activate.service activates the pending image, result in the journal" activation
sim_updates() {
    inside livefw sim sample pfru/code-injection --version 4 -o /root/pfru.bin &&
        inside livefw install /root/pfru.bin 3a731a916e73 --activate &&
        inside livefw sim sample uefi_capsule/ddc0ee61-e7f0-4e7d-acc5-c070a398838e -o /root/uefi.cap &&
        inside livefw install /root/uefi.cap
}
check "PFRU install+activate and a UEFI capsule staged (fd passing, memfds, sim I/O)" sim_updates

sessions() { inside livefw liveupdate list --json; }
fd_store() {
    inside livefw liveupdate create systest --label kept &&
        [ "$(inside systemctl show -p NFileDescriptorStore --value livefwd.service)" -gt 0 ] &&
        inside systemctl kill -s KILL livefwd.service && sleep 3 &&
        inside systemctl is-active livefwd.service &&
        sessions | grep -q systest &&
        inside systemctl restart livefwd.service &&
        sessions | grep -q systest &&
        inside livefw liveupdate drop systest
}
check "a live-update session survives a crash and a restart (fd store)" fd_store

policy() {
    nobody livefw get-devices >/dev/null &&
        { nobody livefw activate dd56; [ $? = 4 ]; } &&
        ! nobody busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
            RequestName su org.livefw.Daemon1 0
}
check "nobody reads, is refused Activate by polkit (exit 4) and cannot own the name" policy

score() {
    inside systemd-analyze security livefwd.service --no-pager | tail -1 | tee /dev/stderr |
        grep -q "exposure level for livefwd.service: 1.7"
}
check "systemd-analyze security livefwd.service (online): 1.7" score

check "no failed units" sh -c "[ -z \"\$(nsenter -t $LEADER -a systemctl --failed --plain --no-legend)\" ]"

purge() {
    inside dpkg --purge livefw && [ ! -e "$MACHINE/var/lib/livefw" ] &&
        [ ! -e "$MACHINE/lib/systemd/system/livefwd.service" ]
}
check "dpkg --purge stops livefwd and removes its state" purge

cleanup
trap - EXIT
# keep the machine for a look when something failed
[ "$failed" = 0 ] && rm -rf "$MACHINE"
echo "system-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
