# shellcheck shell=sh
# The capsule scenario on a disk with 4096-byte logical blocks (vm/run.py capsule-4k).
# shellcheck source=capsule.sh
. "$GUEST_DIR/scenarios/capsule.sh"
