# shellcheck shell=sh
# PFRU and PFRT on the kernel's real drivers (issue 16, scenario 4). The devices
# come from vm/acpi/pfrut.asl (-acpitable): code injection runtime version 16,
# platform 6c6976ef-6677-4d00-8000-766d6c616e65.
PLATFORM=6c6976ef-6677-4d00-8000-766d6c616e65
for node in /dev/acpi_pfr_update0 /dev/acpi_pfr_telemetry0; do
    if [ ! -c "$node" ]; then
        result FAIL "$node missing: the drivers did not bind ($(dmesg | grep -iE 'INTC108|pfr' | tr '\n' '|'))"
        return 0
    fi
done
check cap python3 "$GUEST_DIR/vmcheck.py" pfru-cap || { result FAIL "QUERY_CAP: $CHECK_OUT"; return 0; }
fact query_cap_before "$CHECK_OUT"
python3 "$GUEST_DIR/vmcheck.py" pfru-capsule /tmp/rt17.cap 17 "$PLATFORM"
python3 "$GUEST_DIR/vmcheck.py" pfru-capsule /tmp/other.cap 18 6c6976ef-0000-4d00-8000-000000000000
start_bus
start_livefwd || { result FAIL "livefwd did not answer"; return 0; }
check devices livefw get-devices --json
printf '%s' "$CHECK_OUT" > "$RES/devices.json"
fact devices "$(python3 "$GUEST_DIR/vmcheck.py" summary < "$RES/devices.json")"
dev=$(python3 "$GUEST_DIR/vmcheck.py" device Id "code injection" "$RES/devices.json" 2>/dev/null || true)
[ -n "$dev" ] || { result FAIL "livefwd shows no PFRU device: $CHECK_OUT"; return 0; }
check other livefw install /tmp/other.cap "$dev"
fact install_other_platform "exit $? $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' ' ')"
check install livefw install /tmp/rt17.cap "$dev" --activate
rc=$?
fact install_rt17 "exit $rc $(printf '%s' "$CHECK_OUT" | tail -3 | tr '\n' ' ')"
check cap python3 "$GUEST_DIR/vmcheck.py" pfru-cap
fact query_cap_after "$CHECK_OUT"
after=$CHECK_OUT
check device livefw get-devices --json
fact devices_after "$(printf '%s' "$CHECK_OUT" | python3 "$GUEST_DIR/vmcheck.py" summary)"
check telemetry livefw telemetry "$dev"
trc=$?
printf '%s\n' "$CHECK_OUT" > "$RES/telemetry.txt"
fact telemetry "exit $trc, $(printf '%s\n' "$CHECK_OUT" | wc -l) lines, last: $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' '|')"
# the host reads the firmware's rings out of guest memory (QEMU pmemsave)
touch "$RES/pfru-dump"
i=0
while [ ! -e "$RES/pfru-dumped" ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
case "$after" in
    *code_rt_version=17*) ;;
    *) result FAIL "the firmware's runtime version is not 17 after install --activate (exit $rc)"; return 0 ;;
esac
if [ $trc -ne 0 ] || ! grep -q "activate code injection: 16 -> 17" "$RES/telemetry.txt"; then
    result FAIL "activated (kernel says rt 17) but livefw telemetry did not show the firmware's record"
    return 0
fi
result PASS "capsule staged+activated through /dev/acpi_pfr_update0 (rt 16 -> 17); telemetry read through the real mmap"
