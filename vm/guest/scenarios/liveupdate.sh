# shellcheck shell=sh
# Live Update across a real kexec (issue 16, scenario 2).
# Boot 1: load the same kernel with kexec_file_load, let livefwd create a session
# and preserve the host's payload, probe what writes the kernel still allows on a
# preserved memfd, then livefwd's Kexec. Boot 2 (same initramfs, marker on the
# results share): livefwd takes the sessions back, the payload is retrieved (the
# host compares the bytes), the session is finished.
if [ ! -e "$RES/phase1" ]; then
    fact cmdline "$(cat /proc/cmdline)"
    if [ ! -c /dev/liveupdate ]; then
        result FAIL "no /dev/liveupdate (kho=on liveupdate=on on the command line?)"
        return 0
    fi
    fact kho "$(dmesg | grep -iE 'KHO|liveupdate|luo' | head -5 | tr '\n' '|')"
    if ! check kexec-load kexec -s -l "$KERNEL" --initrd="$INITRD" --reuse-cmdline; then
        result FAIL "kexec_file_load failed: $CHECK_OUT"
        return 0
    fi
    fact kexec_loaded "$(cat /sys/kernel/kexec_loaded) (kexec_file_load of $(basename "$KERNEL"))"
    start_bus
    start_livefwd || { result FAIL "livefwd did not answer"; return 0; }
    check create livefw liveupdate create vm1 --label "vm lane" \
        || { result FAIL "create: $CHECK_OUT"; return 0; }
    check preserve livefw liveupdate preserve vm1 "$RES/payload.bin" --token 7 \
        || { result FAIL "preserve: $CHECK_OUT"; return 0; }
    # a client that keeps its memfd: what may it still do after Preserve?
    check probe python3 "$GUEST_DIR/luo_probe.py" before-kexec "$RES/probe.json" \
        || { result FAIL "write probe: $CHECK_OUT"; return 0; }
    fact after_preserve "$CHECK_OUT"
    touch "$RES/phase1"
    sync
    say "kexec now"
    check kexec livefw liveupdate kexec
    rm -f "$RES/phase1"
    result FAIL "livefw liveupdate kexec returned (exit $?): $CHECK_OUT"
    return 0
fi
# ---- after the kexec
fact kexec "second boot: $(uname -r), boot id $(cat /proc/sys/kernel/random/boot_id)"
fact kho "$(dmesg | grep -iE 'KHO|liveupdate|luo' | head -5 | tr '\n' '|')"
start_bus
start_livefwd || { result FAIL "livefwd did not answer after the kexec"; return 0; }
check list livefw liveupdate list
fact sessions "$(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | tr -s ' ')"
check retrieve livefw liveupdate retrieve vm1 --token 7 -o "$RES/retrieved.bin" \
    || { result FAIL "retrieve: $CHECK_OUT"; return 0; }
check probe python3 "$GUEST_DIR/luo_probe.py" after-kexec "$RES/probe.json" \
    || { result FAIL "retrieve of the probed memfd: $CHECK_OUT"; return 0; }
fact probe_after "$CHECK_OUT"
check finish livefw liveupdate finish vm1 || { result FAIL "finish: $CHECK_OUT"; return 0; }
if cmp -s "$RES/retrieved.bin" "$RES/payload.bin"; then
    result PASS "session vm1 came back after a real kexec; payload identical; finished"
else
    result FAIL "retrieved bytes differ from the payload"
fi
