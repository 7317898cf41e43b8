# shellcheck shell=sh
# fwctl on QEMU's emulated CXL type-3 device (issue 16, scenario 3). QEMU 10 offers
# only kernel-owned features (patrol scrub, ECS); the lane's test-only kernel patch
# (vm/kernel-patches/0001-*, cxl_core.vm_test_count_kernel_features=1) lets the
# kernel register the fwctl device anyway; the features stay kernel-exclusive.
taint_before=$(cat /proc/sys/kernel/tainted)
fact tainted_before "$taint_before"
if [ ! -c /dev/fwctl/fwctl0 ]; then
    result FAIL "no /dev/fwctl/fwctl0 ($(ls /sys/bus/cxl/devices 2>&1 | tr '\n' ' '); $(dmesg | grep -i -E 'cxl|fwctl' | tail -3 | tr '\n' '|'))"
    return 0
fi
fact fwctl_node "$(cat /sys/class/fwctl/fwctl0/device/uevent 2>/dev/null | tr '\n' ' ')"
start_bus
start_livefwd || { result FAIL "livefwd did not answer"; return 0; }
check list livefw fwctl list || { result FAIL "fwctl list: $CHECK_OUT"; return 0; }
fact list "$(printf '%s' "$CHECK_OUT" | tr -s ' ' | tr '\n' '|')"
dev=$(livefw fwctl list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["Id"] if d else "")')
[ -n "$dev" ] || { result FAIL "livefwd lists no fwctl device"; return 0; }
check info livefw fwctl info "$dev" || { result FAIL "fwctl info: $CHECK_OUT"; return 0; }
fact info "$(printf '%s' "$CHECK_OUT" | tr -s ' ' | tr '\n' '|')"
check features python3 "$GUEST_DIR/vmcheck.py" cxl-features "$dev" \
    || { result FAIL "fwctl features: $CHECK_OUT"; return 0; }
fact features "$(printf '%s' "$CHECK_OUT" | tr '\n' '|')"
feat=$(printf '%s\n' "$CHECK_OUT" | head -1 | python3 -c 'import json,sys; e=json.loads(sys.stdin.read()); print(e.get("uuid") or e.get("Uuid") or "")')
getsize=$(printf '%s\n' "$CHECK_OUT" | head -1 | python3 -c 'import json,sys; e=json.loads(sys.stdin.read()); print(e.get("get_size", 8))')
[ -n "$feat" ] || { result FAIL "no feature uuid in: $CHECK_OUT"; return 0; }
req=$(python3 "$GUEST_DIR/vmcheck.py" cxl-get "$feat" "$getsize")
check get livefw fwctl rpc "$dev" configuration "$req" --json
grc=$?
fact get_feature_configuration_scope "exit $grc $(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | cut -c1-300)"
set_req=$(python3 "$GUEST_DIR/vmcheck.py" cxl-set "$feat" 1 00)
check set0 livefw fwctl rpc "$dev" configuration "$set_req" --json
s0=$?
fact set_feature_configuration_scope "exit $s0 $(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | cut -c1-300)"
taint_mid=$(cat /proc/sys/kernel/tainted)
check set2 livefw fwctl rpc "$dev" debug-write "$set_req" --json
s2=$?
fact set_feature_debug_write_scope "exit $s2 $(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | cut -c1-300)"
taint_after=$(cat /proc/sys/kernel/tainted)
fact tainted "before $taint_before, after configuration-scope set $taint_mid, after debug-write set $taint_after (TAINT_FWCTL is bit 19 = 524288)"
check taintcli livefw fwctl info "$dev"
fact info_after "$(printf '%s' "$CHECK_OUT" | grep -i taint | tr -s ' ' | tr '\n' '|')"
if [ $grc -ne 0 ]; then result FAIL "Get Feature at the configuration scope failed"; return 0; fi
if [ $s0 -eq 0 ]; then result FAIL "Set Feature at the configuration scope was accepted"; return 0; fi
if [ $(( taint_mid & 524288 )) -ne 0 ]; then result FAIL "the kernel was tainted by a configuration-scope RPC"; return 0; fi
if [ $(( taint_after & 524288 )) -eq 0 ] && [ $s2 -ne 4 ]; then
    result FAIL "a debug-write RPC reached the kernel without TAINT_FWCTL"; return 0
fi
result PASS "fwctl0 (CXL) via livefwd: Get Feature ok at configuration scope; Set Feature refused at configuration scope; QEMU 10 has no user-settable feature, so acceptance at the right scope cannot be shown"
