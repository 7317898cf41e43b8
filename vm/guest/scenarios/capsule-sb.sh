# shellcheck shell=sh
# The capsule scenario under Secure Boot (vm/run.py capsule-sb): OVMF's secure-boot
# build with Microsoft's keys (plus the lane's test certificate its own boot program
# and kernel are signed with). livefwd gets Debian's signed loader; the firmware's db
# does not trust it (Debian's CA), only shim (Microsoft's CA). Without shim on the ESP
# livefwd must refuse; with Debian's signed shim there it stages through shim, and the
# firmware runs shim, which runs the loader. A third boot sets BootNext to the loader
# itself (no shim): the host checks that the firmware refused it.
CAPSULE_SB=1
CAPSULE_LOADER=$FWUPD_EFI_SIGNED
# shellcheck source=capsule.sh
. "$GUEST_DIR/scenarios/capsule.sh"
