#!/bin/sh
# Build the VM lane's kernel once and cache it.
#   vm/build-kernel.sh            -> prints the path of the cached bzImage
# Source: Debian sid's linux-source-$KVER (fetched through a private apt sources
# list, never installed), x86_64 defconfig + vm/kernel.config (+ vm/kernel-patches/).
# Cache key of the bzImage: source package version + hash of the fragment and the
# patches, so an unchanged set costs nothing.
# Runs at the lowest CPU and I/O priority; VM_JOBS (default 2) sets make -j.
. "$(dirname "$0")/lib.sh"
KVER=${LIVEFW_VM_KVER:-7.2}
JOBS=${VM_JOBS:-2}

host_need flex:flex bison:bison /usr/include/libelf.h:libelf-dev \
    /usr/include/openssl/ssl.h:libssl-dev bc:bc cpio:cpio xz:xz-utils \
    gcc:gcc make:make perl:perl

deb=$(apt_private_fetch "linux-source-$KVER")
debver=$(dpkg-deb -f "$deb" Version)
fraghash=$( { cat "$VM_DIR/kernel.config"; cat "$VM_DIR"/kernel-patches/*.patch 2>/dev/null || true; } \
    | sha256sum | cut -c1-12)
key="$debver-$fraghash"
out=$CACHE/kernel/$key
# one build at a time per tree (another `make vm-test` waits here)
exec 9>"$CACHE/build-$debver.lock"
flock 9
if [ -s "$out/bzImage" ]; then
    log "kernel cached: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi

src=$CACHE/src/linux-source-$debver
if [ ! -f "$src/.extracted" ]; then
    log "unpacking linux-source $debver"
    rm -rf "$src" "$CACHE/src/deb-$debver"
    mkdir -p "$CACHE/src/deb-$debver" "$src"
    dpkg -x "$deb" "$CACHE/src/deb-$debver"
    tarball=$(ls "$CACHE/src/deb-$debver/usr/src/"linux-source-*.tar.*)
    tar -C "$src" --strip-components=1 -xf "$tarball"
    rm -rf "$CACHE/src/deb-$debver"
    touch "$src/.extracted"
fi

# One build tree per source version: a changed fragment or patch recompiles only
# what it touches. Patches are applied to the source tree and reverted (patch -R,
# which touches the files, so make rebuilds them) when they leave vm/kernel-patches/.
build=$CACHE/build/$debver
mkdir -p "$build"
applied=$src/.livefw-patches
mkdir -p "$applied"
want=$(cd "$VM_DIR/kernel-patches" 2>/dev/null && for p in *.patch; do
    [ -e "$p" ] && echo "$(sha256sum < "$p" | cut -c1-12)-$p"; done || true)
have=$(cd "$applied" && ls | sort -r)
for p in $have; do
    case " $(echo $want) " in *" $p "*) continue ;; esac
    log "reverting patch $p"
    (cd "$src" && patch -R -p1 -s < "$applied/$p") || die "reverting $p failed"
    rm -f "$applied/$p"
done
for p in $want; do
    [ -e "$applied/$p" ] && continue
    log "applying test-only patch $p"
    (cd "$src" && patch -p1 --forward -s < "$VM_DIR/kernel-patches/${p#*-}") || die "patch $p failed"
    cp "$VM_DIR/kernel-patches/${p#*-}" "$applied/$p"
done

NICE="nice -n 19"
command -v ionice >/dev/null 2>&1 && NICE="$NICE ionice -c3"
# shellcheck disable=SC2086
run_make() { $NICE make -s -C "$src" O="$build" "$@"; }

log "configuring ($key)"
run_make x86_64_defconfig
(cd "$build" && $NICE "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$VM_DIR/kernel.config" >/dev/null)
run_make olddefconfig
# every option the fragment asks for must have survived dependency resolution
bad=""
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=y) grep -qx "$line" "$build/.config" || bad="$bad ${line%=y}" ;;
        "# CONFIG_"*" is not set") opt=${line#"# "}; opt=${opt%" is not set"}
            grep -q "^$opt=" "$build/.config" && bad="$bad $opt(should be off)" ;;
    esac
done < "$VM_DIR/kernel.config"
[ -z "$bad" ] || die "kernel config lost:$bad"

log "building bzImage with -j$JOBS at nice 19 (first run only; ~15 min idle, longer on a busy machine)"
run_make -j"$JOBS" bzImage
mkdir -p "$out"
cp "$build/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$build/.config" "$out/config"
echo "$debver" > "$out/source-version"
mv "$out/bzImage.tmp" "$out/bzImage"
log "kernel built: $out/bzImage"
echo "$out/bzImage"
