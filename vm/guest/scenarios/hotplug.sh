# shellcheck shell=sh
# Devices appearing at runtime (issue 16, scenario 5): the host hot-adds a second
# CXL type-3 device through QEMU's monitor (vm/run.py during_hotplug) while livefwd
# runs; the kernel's uevents reach livefwd through pyudev and `livefw fwctl list`
# shows the new fwctl device without a restart. Then the host removes it again.
count() { livefw fwctl list --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo "?"; }
start_bus
start_livefwd || { result FAIL "livefwd did not answer"; return 0; }
before=$(count)
fact before "fwctl devices in livefwd: $before; nodes: $(ls /dev/fwctl 2>/dev/null | tr '\n' ' ')"
[ "$before" = 1 ] || { result FAIL "expected one fwctl device before the hot-add, livefwd has $before"; return 0; }
pid_before=$LIVEFWD_PID
touch "$RES/hotplug-add"
i=0
while [ ! -c /dev/fwctl/fwctl1 ] && [ $i -lt 180 ]; do sleep 1; i=$((i+1)); done
fact kernel_add "after ${i}s: $(ls /dev/fwctl | tr '\n' ' '); $(cat "$RES/hotplug-added" 2>/dev/null | tr -d '\r' | grep -v '^(qemu)' | tr '\n' ' ')"
[ -c /dev/fwctl/fwctl1 ] || { result FAIL "the kernel registered no second fwctl device within 180 s"; return 0; }
i=0
while [ "$(count)" != 2 ] && [ $i -lt 120 ]; do sleep 2; i=$((i+2)); done
after=$(count)
fact livefwd_add "livefwd lists $after fwctl devices ${i}s after the node appeared (same pid: $(kill -0 $pid_before 2>/dev/null && echo yes || echo no))"
check list livefw get-devices
fact devices "$(printf '%s' "$CHECK_OUT" | tr -s ' ' | tr '\n' '|')"
touch "$RES/hotplug-del"
i=0
while [ -c /dev/fwctl/fwctl1 ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
j=0
while [ "$(count)" != 1 ] && [ $j -lt 60 ]; do sleep 2; j=$((j+2)); done
fact removal "node gone: $([ -c /dev/fwctl/fwctl1 ] && echo no || echo "yes after ${i}s"); livefwd lists $(count)"
if [ "$after" = 2 ]; then
    result PASS "hot-added CXL device's fwctl node appeared in livefwd without a restart"
else
    result FAIL "livefwd still lists $after fwctl devices after the kernel added fwctl1"
fi
