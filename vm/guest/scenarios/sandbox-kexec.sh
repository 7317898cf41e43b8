# shellcheck shell=sh
# A real kexec under the unit's sandbox. systemd is PID 1 (livefw.init=systemd) and
# starts livefwd from systemd/livefwd.service as shipped (vm/guest/init overrides only
# ExecStart and the config file), so CapabilityBoundingSet=, NoNewPrivileges=, the
# seccomp filter (SystemCallFilter=, reboot(2) added back), DevicePolicy=closed and
# the Protect*=/ReadWritePaths= mounts are what the kernel enforces on its Kexec.
# Boot 1: this (unsandboxed) scenario service loads the same kernel with
# kexec_file_load, as the administrator's kexec tool would (the unit keeps
# kexec_file_load out of livefwd's filter: README "Kexec"); livefwd creates a session,
# preserves the host's payload; `livefw liveupdate kexec` (D-Bus Kexec) really kexecs.
# Boot 2 (same command line, so systemd and the unit again): livefwd takes the session
# back, the payload is retrieved (the host compares the bytes), the session finished.
# The negative controls (the unit without CAP_SYS_BOOT, without reboot(2) in its
# filter: EPERM) are in sandbox.sh, which keeps both scenarios under 10 minutes.
# CapBnd of exactly CAP_LINUX_IMMUTABLE (9) and CAP_SYS_BOOT (22), as the unit says
BND=0000000000400200
# sandboxed NAME: fail unless livefwd's process is the unit's sandboxed one
sandboxed() {
    pid=$(systemctl show -p MainPID --value livefwd.service)
    status=$(grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr -s '\t ' ' ' | tr '\n' ' ')
    fact "process_$1" "pid $pid: $status"
    case "$status" in
        *"CapBnd: $BND "*"NoNewPrivs: 1 Seccomp: 2 "*) return 0 ;;
    esac
    result FAIL "livefwd ($1) is not under the unit's sandbox: $status"
    return 1
}
if [ ! -e "$RES/phase1" ]; then
    fact cmdline "$(cat /proc/cmdline)"
    if [ ! -c /dev/liveupdate ]; then
        result FAIL "no /dev/liveupdate (kho=on liveupdate=on on the command line?)"
        return 0
    fi
    if ! check kexec-load kexec -s -l "$KERNEL" --initrd="$INITRD" --reuse-cmdline; then
        result FAIL "kexec_file_load failed: $CHECK_OUT"
        return 0
    fi
    fact kexec_loaded "$(cat /sys/kernel/kexec_loaded) (kexec_file_load of $(basename "$KERNEL") by the scenario, not livefwd)"
    start_livefwd || { result FAIL "livefwd.service did not answer: $(systemctl status livefwd.service 2>&1 | tail -5 | tr '\n' '|')"; return 0; }
    sandboxed before || return 0
    fact unit "$(systemctl show -p DevicePolicy -p DeviceAllow -p CapabilityBoundingSet -p SystemCallFilter -p ReadWritePaths livefwd.service | cut -c1-300 | tr '\n' '|')"
    check create livefw liveupdate create sk1 --label "sandboxed kexec" \
        || { result FAIL "create: $CHECK_OUT"; return 0; }
    check preserve livefw liveupdate preserve sk1 "$RES/payload.bin" --token 11 \
        || { result FAIL "preserve: $CHECK_OUT"; return 0; }
    journalctl -b --no-pager -u livefwd.service > "$RES/livefwd-boot1.log" 2>&1
    touch "$RES/phase1"
    sync
    say "kexec now (D-Bus Kexec to livefwd.service)"
    check kexec livefw liveupdate kexec
    rc=$?
    rm -f "$RES/phase1"
    journalctl -b --no-pager -u livefwd.service > "$RES/livefwd-boot1.log" 2>&1
    fact journal "$(grep -iE 'kexec|denied|EPERM|not permitted' "$RES/livefwd-boot1.log" | tail -3 | tr '\n' '|' | cut -c1-500)"
    result FAIL "livefw liveupdate kexec returned (exit $rc) under the unit: $CHECK_OUT"
    return 0
fi
# ---- after the kexec
fact kexec "second boot: $(uname -r), boot id $(cat /proc/sys/kernel/random/boot_id)"
start_livefwd || { result FAIL "livefwd.service did not answer after the kexec"; return 0; }
sandboxed after || return 0
check list livefw liveupdate list
fact sessions "$(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | tr -s ' ')"
check retrieve livefw liveupdate retrieve sk1 --token 11 -o "$RES/retrieved.bin" \
    || { result FAIL "retrieve: $CHECK_OUT"; return 0; }
check finish livefw liveupdate finish sk1 || { result FAIL "finish: $CHECK_OUT"; return 0; }
if cmp -s "$RES/retrieved.bin" "$RES/payload.bin"; then
    result PASS "livefwd.service (unit as shipped) kexecked; session sk1 came back; payload identical; finished"
else
    result FAIL "retrieved bytes differ from the payload"
fi
