# shellcheck shell=sh
# UEFI capsule through BootNext on real firmware (issue 16, scenario 1).
# OVMF boots vm/efi/livefw-boot.c from the ESP on a virtio disk; it installs an ESRT
# entry for $FW_CLASS and starts this kernel. Boot 1: livefwd (no --simulate) stages
# the capsule on the ESP, writes UPDATE_INFO, the "Linux Firmware Updater" Boot####
# and BootNext through the real efivarfs; the guest reboots. OVMF follows BootNext to
# Debian's fwupdx64.efi, which calls the firmware's UpdateCapsule and resets. Boot 2
# (marker on the results share): livefwd reconciles the history row from what the
# firmware left (ESRT, UPDATE_INFO) and removes the staging.
efifacts() { python3 "$GUEST_DIR/efifacts.py" "$FW_CLASS" > "$RES/efi-$1.txt" 2>&1; }
mount_esp() {
    dev=$(blkid -t PARTUUID="$ESP_PART_UUID" -o device 2>/dev/null | head -1)
    [ -n "$dev" ] || { say "no partition with PARTUUID $ESP_PART_UUID"; return 1; }
    disk=/sys/class/block/$(basename "$dev")/..
    fact disk "$dev on a disk with $(cat "$disk/queue/logical_block_size")-byte logical blocks"
    # the host's /boot is read-only here: a tmpfs gives the ESP its usual mount point
    mount -t tmpfs -o mode=0755 tmpfs /boot && mkdir -p /boot/efi \
        && mount -t vfat -o umask=0077 "$dev" /boot/efi
}
device_id() { printf 'uefi_capsule:%s' "$FW_CLASS" | sha1sum | cut -d' ' -f1; }
history_row() {
    livefw history --device "$(device_id)" --json > "$RES/history-$1.json" 2>&1
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
e=max(r, key=lambda e: e["Created"]) if r else {}
print(e.get("State","none"), e.get("VersionOld",""), "->", e.get("VersionNew",""), "|", e.get("Reason",""))' \
        "$RES/history-$1.json" 2>&1
}
# efi_debugging (fwupd's EnableEfiDebugging): livefwd sets FWUPDATE_VERBOSE, fwupd-efi
# keeps its log in FWUPDATE_DEBUG_LOG and livefwd quotes its failures in the row
cat > /run/livefw-vm.conf <<CONF
[plugins.uefi_capsule]
efi_loader_path = "${CAPSULE_LOADER:-$FWUPD_EFI}"
efi_debugging = true
CONF
LIVEFWD_ARGS="--config /run/livefw-vm.conf"

if [ -e "$RES/direct" ]; then
    # ---- capsule-sb, third boot: did the firmware start Debian's loader without shim?
    rm -f "$RES/direct"
    efifacts direct
    current=$(sed -n 's/^BootCurrent: //p' "$RES/efi-direct.txt")
    fact direct_loader "BootNext=0009 (Debian's signed fwupdx64.efi, no shim) -> this boot came from $current; $(grep -E '^BootNext' "$RES/efi-direct.txt")"
    python3 "$GUEST_DIR/direct_loader.py" clear
    if [ "$current" = Boot0009 ]; then
        result FAIL "the firmware booted through Boot0009?"
    else
        # the host checks on the serial console that BDS refused Boot0009
        result PASS "$(cat "$RES/verdict") Without shim the firmware does not start Debian's signed loader (BootNext=Boot0009, see the serial console)."
    fi
    return 0
fi

if [ ! -e "$RES/staged" ]; then
    fact cmdline "$(cat /proc/cmdline)"
    if [ ! -d /sys/firmware/efi/esrt/entries/entry0 ]; then
        result FAIL "no ESRT in the kernel (/sys/firmware/efi/esrt): livefw-boot.efi did not install it or esrt.c refused it: $(dmesg | grep -i esrt | tr '\n' '|')"
        return 0
    fi
    fact esrt "kernel's esrt.c: $(dmesg | grep -i 'esrt' | head -2 | tr '\n' '|') entry0 fw_class=$(cat /sys/firmware/efi/esrt/entries/entry0/fw_class) fw_version=$(cat /sys/firmware/efi/esrt/entries/entry0/fw_version)"
    start_bus
    mount_esp || { result FAIL "cannot mount the ESP"; return 0; }
    start_livefwd || { result FAIL "livefwd did not answer"; return 0; }
    check esp livefw esp
    fact esp "$(printf '%s' "$CHECK_OUT" | grep -iE 'esp|method|loader|block|partuuid' | head -6 | tr -s ' ' | tr '\n' '|')"
    if [ -n "${CAPSULE_SB:-}" ]; then
        sb=$(od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | tr -d ' ')
        fact secure_boot "SecureBoot=$sb; $(dmesg | grep -i 'secure boot' | head -1)"
        [ "$sb" = 1 ] || { result FAIL "Secure Boot is not enabled in the guest"; return 0; }
        if check install-without-shim livefw install "$RES/capsule.cap" "$(device_id)"; then
            result FAIL "livefwd staged under Secure Boot without a shim on the ESP: $CHECK_OUT"
            return 0
        fi
        fact refused_without_shim "$(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | tr -s ' ')"
        case "$CHECK_OUT" in
            *"shim is not installed"*) ;;
            *) result FAIL "refused, but not for the missing shim: $CHECK_OUT"; return 0 ;;
        esac
        if [ -e /sys/firmware/efi/efivars/BootNext-8be4df61-93ca-11d2-aa0d-00e098032b8c ]; then
            result FAIL "BootNext exists after the refused install"; return 0
        fi
        # what shim-signed's installation does: Debian's signed shim next to the loader
        mkdir -p /boot/efi/EFI/debian && cp "$SHIM_SIGNED" /boot/efi/EFI/debian/shimx64.efi
        check refresh livefw refresh
    fi
    if ! check install livefw install "$RES/capsule.cap" "$(device_id)"; then
        result FAIL "livefw install: $CHECK_OUT"
        return 0
    fi
    fact install "$(printf '%s' "$CHECK_OUT" | tr '\n' ' ' | tr -s ' ')"
    fact row_before_reboot "$(history_row staged)"
    efifacts staged
    fact efivars_staged "$(grep -E '^(BootNext|Boot[0-9A-F]{4}: .Linux Firmware|UPDATE_INFO)' "$RES/efi-staged.txt" | tr '\n' '|')"
    [ -e "/sys/firmware/efi/efivars/FWUPDATE_VERBOSE-0abba7dc-e516-4167-bbf5-4d9d1c739416" ] \
        || { result FAIL "livefwd did not set FWUPDATE_VERBOSE (efi_debugging = true)"; return 0; }
    fact esp_files "$(cd /boot/efi && find EFI -path EFI/livefw -prune -o -type f -print | sort | tr '\n' ' ')"
    stop_livefwd
    rm -rf "$RES/state"
    cp -a "$STATE" "$RES/state"
    umount /boot/efi
    touch "$RES/staged"
    sync
    say "rebooting into the firmware (BootNext)"
    echo b > /proc/sysrq-trigger
    sleep 60
    result FAIL "the reboot did not happen"
    return 0
fi

# ---- after the reboot: the firmware ran BootNext (or not); what did it leave?
rm -f "$RES/staged"
efifacts after
fact efivars_after_reboot "$(grep -E '^(BootCurrent|BootNext|UPDATE_INFO|FWUPDATE_DEBUG_LOG|ESRT)' "$RES/efi-after.txt" | cut -c1-600 | tr '\n' '|')"
mkdir -p "$(dirname "$STATE")"
rm -rf "$STATE"
cp -a "$RES/state" "$STATE"
start_bus
mount_esp || { result FAIL "cannot mount the ESP after the reboot"; return 0; }
start_livefwd || { result FAIL "livefwd did not answer after the reboot"; return 0; }
row=$(history_row after)
fact row_after_reboot "$row"
efifacts cleaned
fact efivars_after_reconcile "$(grep -E '^(BootNext|Boot[0-9A-F]{4}: .Linux Firmware|UPDATE_INFO)' "$RES/efi-cleaned.txt" | tr '\n' '|')"
fact esp_after "$(cd /boot/efi && find EFI -path EFI/livefw -prune -o -type f -print | sort | tr '\n' ' ')"
state=${row%% *}
status=$(sed -n 's/^UPDATE_INFO: status \([0-9]*\).*/\1/p' "$RES/efi-after.txt")
version=$(cat /sys/firmware/efi/esrt/entries/entry0/fw_version)
refused=$(sed -n 's/.*\(Could not apply capsule update: [A-Za-z][A-Za-z ]*[A-Za-z]\).*/\1/p' "$RES/efi-after.txt" | head -1)
fact firmware_answer "${refused:-fwupd-efi logged no UpdateCapsule failure}"
if [ "$status" != 2 ]; then
    result FAIL "fwupd-efi did not stamp the UPDATE_INFO record (status '$status', 2 = attempted); row: $row"
elif [ -n "$refused" ] && [ "$state" != failed ]; then
    result FAIL "fwupd-efi logged '$refused' but livefwd's row is '$state': $row"
elif [ -n "$refused" ] && [ "${row#*"fwupd-efi logged: "*"$refused"}" = "$row" ]; then
    result FAIL "fwupd-efi logged '$refused' but livefwd's row does not quote it: $row"
elif [ "$state" = success ] && [ "$version" = "$ESRT_VERSION" ]; then
    result FAIL "livefwd reports success but the ESRT still says version $version: $row"
elif [ -n "${CAPSULE_SB:-}" ] && { [ "$state" = success ] || [ "$state" = failed ]; }; then
    # Secure Boot: one more boot, with BootNext at Debian's signed loader itself (what
    # livefw staged before it went through shim): the firmware's db must refuse it
    printf '%s' "fwupd-efi ran through shim under Secure Boot; livefwd resolved the row: $row." > "$RES/verdict"
    python3 "$GUEST_DIR/direct_loader.py" set "$ESP_PART_UUID" \
        || { result FAIL "could not write Boot0009/BootNext"; return 0; }
    stop_livefwd
    umount /boot/efi
    touch "$RES/direct"
    sync
    say "rebooting into Debian's signed loader without shim (BootNext=Boot0009)"
    echo b > /proc/sysrq-trigger
    sleep 60
    result FAIL "the reboot did not happen"
elif [ "$state" = success ] || [ "$state" = failed ] || [ "$state" = failed-transient ]; then
    result PASS "fwupd-efi ran from BootNext and stamped the record; livefwd resolved the row: $row"
else
    result FAIL "the history row did not resolve after the reboot: $row"
fi
