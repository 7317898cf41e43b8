# shellcheck shell=sh
# Helpers for the guest scenario scripts (POSIX sh, busybox or the host's tools).
RES=/run/vm-results
[ -f "$RES/env.sh" ] && . "$RES/env.sh"     # written by the host: REPO, KERNEL, INITRD, ...
export PATH="$REPO/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
STATE=${STATE:-/var/lib/livefw}

say() { t=$(cut -d' ' -f1 /proc/uptime); echo "VMLOG: [$t] $*" > /dev/console; echo "[$t] $*" >> "$RES/guest.log"; }
# fact KEY TEXT: something the kernel or firmware did, shown by the host
fact() { k=$1; shift; printf 'FACT %s %s\n' "$k" "$*" >> "$RES/result"; printf 'VMFACT %s %s\n' "$k" "$*" > /dev/console; }
# result PASS|FAIL|SKIP TEXT: the scenario's verdict (the last one counts)
result() { v=$1; shift; printf 'RESULT %s %s\n' "$v" "$*" >> "$RES/result"; printf 'VMRESULT %s %s\n' "$v" "$*" > /dev/console; }
# check NAME CMD...: run CMD, record its output and exit code, return its exit code
check() {
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "--- [$(cut -d' ' -f1 /proc/uptime)] $name (rc=$rc): $*" "$out" >> "$RES/guest.log"
    CHECK_OUT=$out
    return $rc
}
finish() {
    stop_livefwd
    sync
    say "guest done"
    echo o > /proc/sysrq-trigger
    sleep 30
}

start_bus() {
    # under systemd (livefw.init=systemd) the system bus is dbus.service
    [ -n "${LIVEFW_VM_SYSTEMD:-}" ] && return 0
    mkdir -p /run/dbus
    cat > /run/dbus/bus.conf <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/><allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
    dbus-daemon --config-file=/run/dbus/bus.conf --fork --nopidfile
    # udev, as on a real machine: livefwd's uevent monitor (pyudev, source "udev")
    # hears only what systemd-udevd re-broadcasts, and udev properties come from its db
    if [ -x /lib/systemd/systemd-udevd ]; then
        /lib/systemd/systemd-udevd --daemon
        udevadm trigger --action=add >/dev/null 2>&1
        udevadm settle --timeout=120 || say "udevadm settle timed out"
    fi
    i=0
    while [ ! -S /run/dbus/system_bus_socket ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
}

# start_livefwd [WRAPPER...]: livefwd with the real provider (no --simulate);
# LIVEFWD_ARGS: more options (e.g. --config FILE);
# waits until it answers on the bus (Python is ~20x slower under TCG).
start_livefwd() {
    if [ -n "${LIVEFW_VM_SYSTEMD:-}" ]; then
        systemctl start --no-block livefwd.service
        LIVEFWD_PID=""
    else
        mkdir -p "$STATE"
        # shellcheck disable=SC2086
        "$@" livefwd --state-dir "$STATE" ${LIVEFWD_ARGS:-} -v >> "$RES/livefwd.log" 2>&1 &
        LIVEFWD_PID=$!
    fi
    i=0
    while [ $i -lt 600 ]; do
        if livefw plugins --json > "$RES/plugins.json" 2>/dev/null; then
            say "livefwd up after ${i}s"
            return 0
        fi
        if [ -n "$LIVEFWD_PID" ]; then
            kill -0 "$LIVEFWD_PID" 2>/dev/null || { say "livefwd exited"; return 1; }
        elif systemctl is-failed -q livefwd.service; then
            say "livefwd.service failed"; return 1
        elif [ $((i % 15)) -eq 14 ]; then
            # a unit in a restart loop is never "failed": keep its journal visible
            journalctl -b --no-pager -u livefwd.service > "$RES/livefwd.log" 2>&1
        fi
        sleep 1; i=$((i+1))
    done
    return 1
}
stop_livefwd() {
    if [ -n "${LIVEFW_VM_SYSTEMD:-}" ]; then
        journalctl -b --no-pager -u livefwd.service > "$RES/livefwd.log" 2>&1
        systemctl stop livefwd.service
        return 0
    fi
    [ -n "${LIVEFWD_PID:-}" ] || return 0
    kill "$LIVEFWD_PID" 2>/dev/null
    i=0
    while kill -0 "$LIVEFWD_PID" 2>/dev/null && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
    LIVEFWD_PID=""
}
