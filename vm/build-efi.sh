#!/bin/sh
# EFI pieces of the capsule scenario (issue 16, scenario 1); prints KEY=VALUE lines:
#   BOOT_EFI          vm/efi/livefw-boot.c built with gnu-efi (cached by source hash)
#   FWUPD_EFI         Debian's unsigned fwupd-efi loader (fwupd-unsigned)
#   FWUPD_EFI_SIGNED  the same loader signed for Secure Boot (fwupd-amd64-signed)
#   SHIM_SIGNED       Debian's shim signed by Microsoft (shim-signed)
# The packages are fetched with `apt-get download` (Debian stable) and unpacked
# with dpkg -x into the cache; nothing is installed on the system.
#   SB_VARS           OVMF_VARS_4M.ms.fd (Microsoft's keys) with the lane's own test
#                     certificate added to db, so the lane's boot program and kernel
#                     (signed with it by vm/run.py) boot under Secure Boot; edited
#                     offline with virt-fw-vars (virt-firmware from PyPI, in its own
#                     venv in the cache)
#   SB_KEY, SB_CERT   that test key pair (made once with openssl, kept in the cache)
. "$(dirname "$0")/lib.sh"
host_need gcc:gcc ld:binutils objcopy:binutils sbsign:sbsigntool \
    /usr/share/OVMF/OVMF_VARS_4M.ms.fd:ovmf
dir=$CACHE/efi
root=$dir/root
mkdir -p "$dir/debs" "$root"
for pkg in gnu-efi fwupd-unsigned fwupd-amd64-signed shim-signed; do
    if [ ! -e "$dir/.unpacked-$pkg" ]; then
        log "fetching $pkg"
        (cd "$dir/debs" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg"
        dpkg -x "$(ls -t "$dir/debs/${pkg}_"*.deb | head -1)" "$root"
        touch "$dir/.unpacked-$pkg"
    fi
done
src=$VM_DIR/efi/livefw-boot.c
key=$(cat "$src" "$0" | sha256sum | cut -c1-12)
out=$dir/livefw-boot-$key.efi
if [ ! -s "$out" ]; then
    tmp=$(mktemp -d)
    inc=$root/usr/include/efi
    lib=$root/usr/lib
    gcc -I"$inc" -I"$inc/x86_64" -I"$inc/protocol" -O2 -fpic -fshort-wchar -mno-red-zone \
        -fno-stack-protector -fno-strict-aliasing -ffreestanding -fno-builtin \
        -DEFI_FUNCTION_WRAPPER -DGNU_EFI_USE_MS_ABI -maccumulate-outgoing-args \
        -Wall -Werror -c "$src" -o "$tmp/boot.o"
    ld -nostdlib -znocombreloc -T "$lib/elf_x86_64_efi.lds" -shared -Bsymbolic \
        -L"$lib" "$lib/crt0-efi-x86_64.o" "$tmp/boot.o" -o "$tmp/boot.so" -lefi -lgnuefi
    objcopy -j .text -j .sdata -j .data -j .dynamic -j .dynsym -j .rel -j .rela \
        -j '.rel.*' -j '.rela.*' -j .reloc --target efi-app-x86_64 --subsystem=10 \
        "$tmp/boot.so" "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
fi
key=$dir/livefw-vm-db.key
cert=$dir/livefw-vm-db.pem
if [ ! -s "$cert" ]; then
    openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
        -subj "/CN=livefw VM lane test db key (not for real machines)/" \
        -keyout "$key.tmp" -out "$cert.tmp" 2>/dev/null || die "openssl req"
    mv "$key.tmp" "$key"
    mv "$cert.tmp" "$cert"
fi
vf=$CACHE/virt-firmware
if [ ! -x "$vf/bin/virt-fw-vars" ]; then
    log "installing virt-firmware (PyPI) into $vf"
    python3 -m venv "$vf" && "$vf/bin/pip" install -q virt-firmware >&2 \
        || die "pip install virt-firmware"
fi
vars=$dir/OVMF_VARS_4M.ms+livefw-$( { sha256sum /usr/share/OVMF/OVMF_VARS_4M.ms.fd; cat "$cert"; } \
    | sha256sum | cut -c1-12).fd
if [ ! -s "$vars" ]; then
    "$vf/bin/virt-fw-vars" -i /usr/share/OVMF/OVMF_VARS_4M.ms.fd -o "$vars.tmp" \
        --add-db 9d2bdbb4-1b3c-4e2a-8f5a-6c7d8e9fa0b1 "$cert" >&2 || die "virt-fw-vars"
    mv "$vars.tmp" "$vars"
fi
echo "BOOT_EFI=$out"
echo "SB_VARS=$vars"
echo "SB_KEY=$key"
echo "SB_CERT=$cert"
echo "FWUPD_EFI=$root/usr/libexec/fwupd/efi/fwupdx64.efi"
echo "FWUPD_EFI_SIGNED=$root/usr/libexec/fwupd/efi/fwupdx64.efi.signed"
echo "SHIM_SIGNED=$root/usr/lib/shim/shimx64.efi.signed"
