# shellcheck shell=sh
# The unit's sandbox on the real kernel (issue 16, scenario 6). systemd is PID 1
# (livefw.init=systemd) and starts livefwd from systemd/livefwd.service as shipped
# (vm/guest/init overrides only ExecStart and the config file), so its capability
# bounding set, NoNewPrivileges, DevicePolicy=closed + DeviceAllow, seccomp filter
# and mount protections are what the kernel enforces. The machine has every device
# of the other scenarios; livefwd must still see and drive each of them. Then the
# unit's kexec lines are removed in turn (EPERM each); sandbox-kexec does the kexec.
PLATFORM=6c6976ef-6677-4d00-8000-766d6c616e65
failures=""
start_livefwd || { result FAIL "livefwd.service did not answer: $(systemctl status livefwd.service 2>&1 | tail -5 | tr '\n' '|')"; return 0; }
pid=$(systemctl show -p MainPID --value livefwd.service)
fact process "$(grep -E '^(CapInh|CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/$pid/status | tr -s '\t ' ' ' | tr '\n' ' ')"
fact unit "$(systemctl show -p DevicePolicy -p DeviceAllow -p CapabilityBoundingSet -p SystemCallFilter livefwd.service | cut -c1-400 | tr '\n' '|')"
fact cgroup "$(cat /proc/$pid/cgroup)"
check devices livefw get-devices --json
printf '%s' "$CHECK_OUT" > "$RES/devices.json"
fact devices "$(python3 "$GUEST_DIR/vmcheck.py" summary < "$RES/devices.json")"
# PFRU: stage + activate through the real driver, then telemetry through mmap
python3 "$GUEST_DIR/vmcheck.py" pfru-capsule /tmp/rt17.cap 17 "$PLATFORM"
dev=$(python3 "$GUEST_DIR/vmcheck.py" device Id "code injection" "$RES/devices.json" 2>/dev/null || true)
if check pfru livefw install /tmp/rt17.cap $dev --activate; then
    check cap python3 "$GUEST_DIR/vmcheck.py" pfru-cap
    case "$CHECK_OUT" in *code_rt_version=17*) ;; *) failures="$failures pfru-version" ;; esac
    fact pfru "install --activate ok; kernel: $CHECK_OUT"
else
    failures="$failures pfru-install"; fact pfru "install failed: $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' ' ')"
fi
if check telemetry livefw telemetry $dev; then
    fact telemetry "$(printf '%s' "$CHECK_OUT" | wc -l) lines"
else
    failures="$failures telemetry"; fact telemetry "failed: $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' ' ')"
fi
# fwctl: the CXL device (DeviceAllow=char-fwctl)
fdev=$(livefw fwctl list --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["Id"] if d else "")' 2>/dev/null)
if [ -n "$fdev" ] && check features livefw fwctl features "$fdev"; then
    fact fwctl "features ok: $(printf '%s' "$CHECK_OUT" | head -3 | tr -s ' ' | tr '\n' '|')"
else
    failures="$failures fwctl"; fact fwctl "failed (device '$fdev'): $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' ' ')"
fi
# liveupdate: /dev/liveupdate (DeviceAllow) and a preserved memfd
head -c 5000 /dev/urandom > /tmp/payload.bin
if check lu-create livefw liveupdate create sb1 && check lu-preserve livefw liveupdate preserve sb1 /tmp/payload.bin --token 1; then
    fact liveupdate "session sb1 created, memfd preserved"
else
    failures="$failures liveupdate"; fact liveupdate "failed: $(printf '%s' "$CHECK_OUT" | tail -2 | tr '\n' ' ')"
fi
# The unit's two kexec lines, each removed in turn: a byte copy of
# systemd/livefwd.service per case plus a drop-in with the removal that runs livefwd's
# own kexec call (vm/guest/kexec_eperm.py) as a oneshot instead of the daemon (a
# daemon start costs ~100 s under TCG). Each must get EPERM (no image is loaded here:
# a call that got through would answer EINVAL, never kexec). The kexec itself under
# the unit as shipped is the sandbox-kexec scenario.
site=$(ls -d "$REPO"/.venv/lib/python3*/site-packages | head -1)
pyver=$(basename "$(dirname "$site")")
for what in cap seccomp; do
    case $what in
        cap) line="CapabilityBoundingSet=~CAP_SYS_BOOT" ;;
        seccomp) line="SystemCallFilter=~reboot" ;;
    esac
    unit=/run/systemd/system/livefwd-no$what.service
    cp "$REPO/systemd/livefwd.service" "$unit"
    mkdir -p "$unit.d"
    # BusName: systemd refuses two units with one bus name. No ExecStartPre= or
    # RuntimeDirectory=: the copy must not touch livefwd.service's /run/livefw.
    cat > "$unit.d/negative.conf" <<UNIT
[Service]
$line
Type=oneshot
Restart=no
BusName=org.livefw.VmNegative$what
ExecStartPre=
RuntimeDirectory=
ExecStart=
ExecStart=/usr/bin/$pyver -c "import runpy, site; site.addsitedir('$site'); runpy.run_path('$GUEST_DIR/kexec_eperm.py', run_name='__main__')"
StandardOutput=append:/run/livefw-vm/negative-$what.out
UNIT
done
systemctl daemon-reload
for what in cap seccomp; do
    case $what in
        cap) line="CapabilityBoundingSet=~CAP_SYS_BOOT" bnd=0000000000000200 ;;
        seccomp) line="SystemCallFilter=~reboot" bnd=0000000000400200 ;;
    esac
    systemctl start "livefwd-no$what.service"
    rc=$?
    got=$(tr '\n' ' ' < "/run/livefw-vm/negative-$what.out" 2>&1)
    [ "$rc" -eq 0 ] || got="$got $(systemctl status "livefwd-no$what.service" 2>&1 | tail -4 | tr '\n' '|')"
    fact "without_$what" "$line: exit $rc, $(printf '%s' "$got" | cut -c1-200)"
    case "$rc $got" in
        "0 CapBnd: $bnd Seccomp: 2 EPERM: "*CAP_SYS_BOOT*) ;;
        *) failures="$failures kexec-without-$what" ;;
    esac
done
check esp livefw esp
fact esp "exit $? $(printf '%s' "$CHECK_OUT" | tail -3 | tr -s ' ' | tr '\n' '|')"
journalctl -b --no-pager -u livefwd.service | grep -iE "denied|EPERM|Operation not permitted|error" | head -5 > "$RES/sandbox-denials.txt"
fact journal "$(tr '\n' '|' < "$RES/sandbox-denials.txt" | cut -c1-500)"
if [ -n "$failures" ]; then
    result FAIL "under livefwd.service's sandbox these failed:$failures"
else
    result PASS "sandboxed livefwd (unit as shipped) drove PFRU, PFRT, fwctl and /dev/liveupdate; its kexec call without CAP_SYS_BOOT or reboot(2) in the filter: EPERM"
fi
