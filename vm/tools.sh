#!/bin/sh
# Make sure the VM lane's tools are present; prints `KEY=VALUE` lines
# (QEMU, QEMU_DATA) for the harness. Installs only what is missing:
#  - Debian stable packages through tools/apt-need (ovmf, busybox-static, ...)
#  - QEMU 10 from bookworm-backports, downloaded through the private sources
#    list and unpacked with dpkg -x into the cache (the system QEMU, if any,
#    is left alone); its shared-library dependencies come from stable.
. "$(dirname "$0")/lib.sh"

host_need /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf /bin/busybox:busybox-static \
    iasl:acpica-tools kexec:kexec-tools cpio:cpio setpriv:util-linux \
    dbus-daemon:dbus mkfs.vfat:dosfstools sfdisk:fdisk mtools:mtools \
    /usr/share/seabios/bios.bin:seabios /usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root \
    || die "/bin/busybox is not busybox-static"

QVER=${LIVEFW_VM_QEMU:-bookworm-backports}
qdir=$CACHE/qemu
if [ ! -x "$qdir/usr/bin/qemu-system-x86_64" ]; then
    log "fetching QEMU from $QVER"
    rm -rf "$qdir.tmp"
    mkdir -p "$qdir.tmp"
    for p in qemu-system-x86 qemu-system-common qemu-system-data; do
        deb=$(apt_private_fetch "$p/$QVER")
        dpkg -x "$deb" "$qdir.tmp"
    done
    # runtime libraries: whatever the stable suite provides and is missing here
    deps=$(apt_private_tool apt-cache show "qemu-system-x86/$QVER" | sed -n 's/^Depends: //p' | head -1 \
        | tr ',|' '\n\n' | sed 's/^ *//; s/[ (:].*//' | grep -v '^qemu-' | grep -v '^$')
    missing=""
    for d in $deps; do
        dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $d"
    done
    if [ -n "$missing" ]; then
        log "installing QEMU's libraries from stable:$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
    rm -rf "$qdir"
    mv "$qdir.tmp" "$qdir"
fi
"$qdir/usr/bin/qemu-system-x86_64" --version >/dev/null || die "QEMU does not run"
echo "QEMU=$qdir/usr/bin/qemu-system-x86_64"
echo "QEMU_DATA=$qdir/usr/share/qemu"
