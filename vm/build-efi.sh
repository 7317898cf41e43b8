#!/bin/sh
# EFI pieces of the capsule scenario (issue 16, scenario 1); prints KEY=VALUE lines:
#   BOOT_EFI          vm/efi/livefw-boot.c built with gnu-efi (cached by source hash)
#   FWUPD_EFI         Debian's unsigned fwupd-efi loader (fwupd-unsigned)
#   FWUPD_EFI_SIGNED  the same loader signed for Secure Boot (fwupd-amd64-signed)
#   SHIM_SIGNED       Debian's shim signed by Microsoft (shim-signed)
# The packages are fetched with `apt-get download` (Debian stable) and unpacked
# with dpkg -x into the cache; nothing is installed on the system.
. "$(dirname "$0")/lib.sh"
host_need gcc:gcc ld:binutils objcopy:binutils
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
echo "BOOT_EFI=$out"
echo "FWUPD_EFI=$root/usr/libexec/fwupd/efi/fwupdx64.efi"
echo "FWUPD_EFI_SIGNED=$root/usr/libexec/fwupd/efi/fwupdx64.efi.signed"
echo "SHIM_SIGNED=$root/usr/lib/shim/shimx64.efi.signed"
