# shellcheck shell=sh
# Shared helpers for the VM lane (sourced by vm/*.sh). POSIX sh.
# Everything the lane downloads or builds lives under $LIVEFW_VM_CACHE.
set -eu
VM_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$VM_DIR/.." && pwd)
CACHE=${LIVEFW_VM_CACHE:-${HOME}/.cache/livefw-vm}
APT_DIR=$CACHE/apt
mkdir -p "$CACHE"

log() { echo "vm: $*" >&2; }
die() { echo "vm: error: $*" >&2; exit 1; }

# apt with a private sources list, lists directory and package cache: used for
# sid (the kernel source) and bookworm-backports (QEMU 10). Only `download` is
# ever run through it; nothing from these suites is installed on the system.
apt_private() {
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    if [ ! -s "$APT_DIR/sources.list" ]; then
        cat > "$APT_DIR/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SRC
    fi
    apt_private_tool apt-get "$@"
}

# apt_private_tool apt-get|apt-cache ARGS...
apt_private_tool() {
    tool=$1; shift
    "$tool" -q -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_DIR/lists" \
        -o Dir::Cache="$APT_DIR/cache" \
        -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root \
        "$@"
}

apt_private_update() {
    stamp=$APT_DIR/lists/.updated
    # refresh at most once a day
    if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
        apt_private update -qq
        touch "$stamp"
    fi
}

# apt_private_fetch PKG[=VERSION|/SUITE] -> prints the path of the downloaded .deb
apt_private_fetch() {
    apt_private_update
    mkdir -p "$APT_DIR/debs"
    (cd "$APT_DIR/debs" && apt_private download "$1" >&2)
    name=${1%%[=/]*}
    ls -t "$APT_DIR/debs/${name}_"*.deb | head -1
}

# Debian packages for the host, only when missing (stable suite, system apt).
host_need() { "$REPO_DIR/tools/apt-need" "$@" >&2; }
