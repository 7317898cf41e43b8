#!/bin/sh
# The VM lane's initramfs: static busybox and vm/guest/init. Prints its path.
. "$(dirname "$0")/lib.sh"
host_need /bin/busybox:busybox-static cpio:cpio
key=$( { sha256sum /bin/busybox; cat "$VM_DIR/guest/init"; } | sha256sum | cut -c1-12)
out=$CACHE/initramfs/initramfs-$key.cpio.gz
if [ ! -s "$out" ]; then
    tmp=$(mktemp -d)
    mkdir -p "$tmp/bin" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/newroot"
    cp /bin/busybox "$tmp/bin/busybox"
    cp "$VM_DIR/guest/init" "$tmp/init"
    chmod 755 "$tmp/init"
    mkdir -p "$(dirname "$out")"
    (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -9) > "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
fi
echo "$out"
