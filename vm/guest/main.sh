#!/bin/sh
# Guest driver, run by /init inside the chroot of the host's read-only root.
# Reads livefw.scenario=NAME from the kernel command line and runs
# vm/guest/scenarios/NAME.sh with the helpers of vm/guest/common.sh; results go
# to /run/vm-results (a writable 9p share the host reads) and to the console.
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
. "$GUEST_DIR/common.sh"
scenario=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in livefw.scenario=*) scenario=${arg#livefw.scenario=} ;; esac
done
fact boot "kernel $(uname -r), boot $(cat /proc/sys/kernel/random/boot_id)"
if [ -z "$scenario" ] || [ ! -f "$GUEST_DIR/scenarios/$scenario.sh" ]; then
    result FAIL "no such scenario: '$scenario'"
else
    # shellcheck disable=SC1090
    ( . "$GUEST_DIR/scenarios/$scenario.sh" ) || result FAIL "scenario script exited with $?"
fi
finish
