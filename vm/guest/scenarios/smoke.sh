# shellcheck shell=sh
# Smoke: the guest boots, livefwd starts with the real provider and answers.
fact cmdline "$(cat /proc/cmdline)"
fact efi "efivarfs: $(ls /sys/firmware/efi/efivars 2>/dev/null | wc -l) variables; ESRT: $([ -d /sys/firmware/efi/esrt ] && ls /sys/firmware/efi/esrt/entries | wc -l || echo 'none (/sys/firmware/efi/esrt absent)')"
start_bus
if ! start_livefwd; then
    result FAIL "livefwd did not answer on the bus (see build/vm/smoke/livefwd.log)"
    return 0
fi
fact plugins "$(python3 -c 'import json,sys; print(" ".join(f"{p["Name"]}={p["Result"]}({p["Devices"]})" for p in json.load(open(sys.argv[1]))))' "$RES/plugins.json")"
check esp livefw esp
fact esp "exit $? $(printf '%s' "$CHECK_OUT" | tail -3 | tr -s ' ' | tr '\n' '|')"
check devices livefw get-devices
fact devices "$(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | tr -s ' ')"
sim=$(busctl get-property org.livefw.Daemon1 /org/livefw/Daemon1 org.livefw.Daemon1.Manager Simulated 2>&1)
if [ "$sim" != "b false" ]; then
    result FAIL "Manager.Simulated is '$sim', not 'b false'"
else
    result PASS "livefwd answered with the real provider"
fi
