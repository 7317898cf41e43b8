"""UEFI as the kernel and fwupd-efi expose it: one module per role, one namespace.

``from livefw.kernel.uapi import efi`` gives every public name of the modules below
(``efi.LoadOption``, ``efi.ESRT_ENTRIES`` ...); a module that needs one role may
import that module instead.

- :mod:`.paths`: the EFI kobject, Xen, the kernel release, fwupd-efi's loaders,
  block-device geometry.
- :mod:`.names`: vendor GUIDs (include/linux/efi.h) and SecureBoot.
- :mod:`.esrt`: the ESRT below /sys/firmware/efi/esrt (drivers/firmware/efi/esrt.c).
- :mod:`.efivarfs`: variable files, names, attributes, mutability and the kernel's
  validation (fs/efivarfs/).
- :mod:`.load_option`: ``Boot####``/``BootNext``, EFI_LOAD_OPTION, device paths.
- :mod:`.efitime`: EFI_TIME.
- :mod:`.update_info`: fwupd-efi's UPDATE_INFO record.
- :mod:`.capsule_delivery`: OsIndications, capsule on disk, ``Capsule####`` results.
- :mod:`.capsule_file`: the walk over a capsule file, FMP_PAYLOAD_HEADER.

GUIDs are text in lowercase; on the wire they are in EFI byte order (the first three
fields little-endian: the kernel's ``efi_guid_t``, include/linux/efi.h), converted
by :func:`livefw.kernel.uapi.capsule.guid_to_efi`/``guid_from_efi``. docs/kernel.md,
section "UEFI: ESRT, efivarfs, boot variables", lists each kernel behaviour with its
source.
"""

from livefw.kernel.uapi.efi import (
    capsule_delivery,
    capsule_file,
    efitime,
    efivarfs,
    esrt,
    load_option,
    names,
    paths,
    update_info,
)
from livefw.kernel.uapi.efi.capsule_delivery import *  # noqa: F403
from livefw.kernel.uapi.efi.capsule_file import *  # noqa: F403
from livefw.kernel.uapi.efi.efitime import *  # noqa: F403
from livefw.kernel.uapi.efi.efivarfs import *  # noqa: F403
from livefw.kernel.uapi.efi.esrt import *  # noqa: F403
from livefw.kernel.uapi.efi.load_option import *  # noqa: F403
from livefw.kernel.uapi.efi.names import *  # noqa: F403
from livefw.kernel.uapi.efi.paths import *  # noqa: F403
from livefw.kernel.uapi.efi.update_info import *  # noqa: F403

__all__ = [
    *capsule_delivery.__all__,
    *capsule_file.__all__,
    *efitime.__all__,
    *efivarfs.__all__,
    *esrt.__all__,
    *load_option.__all__,
    *names.__all__,
    *paths.__all__,
    *update_info.__all__,
]
