/*
 * livefw-boot.efi: the VM lane's boot program for the UEFI capsule scenario
 * (issue 16, scenario 1). OVMF starts it from the ESP as \EFI\BOOT\BOOTX64.EFI
 * whenever no BootNext points elsewhere. It
 *
 *   1. installs an EFI System Resource Table (configuration table
 *      EFI_SYSTEM_RESOURCE_TABLE_GUID, version 1) whose entries are read
 *      verbatim from \EFI\livefw\esrt.bin (40-byte EFI_SYSTEM_RESOURCE_ENTRY
 *      records written by vm/run.py). OVMF has no FMP driver and publishes no
 *      ESRT of its own; the kernel's drivers/firmware/efi/esrt.c
 *      (efi_esrt_init) then finds this table like any firmware's.
 *      The entries are the same at every boot: nothing here records an update
 *      attempt, so last_attempt_version/status only change if the file does.
 *      A capsule for the entry's fw_class goes through OVMF's own
 *      QueryCapsuleCapabilities/UpdateCapsule (called by fwupd-efi); whatever
 *      they answer is OVMF's answer, and nothing here pretends otherwise.
 *   2. starts the Linux kernel (its EFI stub) from \EFI\livefw\vmlinuz.efi with
 *      the command line in \EFI\livefw\cmdline.txt (ASCII; it carries
 *      initrd=\EFI\livefw\initrd.img for the stub's initrd loader).
 *
 * Written against gnu-efi (Debian's gnu-efi package), built by vm/build-efi.sh.
 */
#include <efi.h>
#include <efilib.h>

static EFI_GUID esrt_guid = { 0xb122a263, 0x3661, 0x4f68,
			      { 0x99, 0x29, 0x78, 0xf8, 0xb0, 0xd6, 0x21, 0x80 } };

#define ESRT_ENTRY_SIZE 40 /* EFI_SYSTEM_RESOURCE_ENTRY (UEFI 2.x, 23.4) */
#define ESRT_MAX_ENTRIES 16
#define CMDLINE_MAX 4096

typedef struct {
	UINT32 fw_resource_count;
	UINT32 fw_resource_count_max;
	UINT64 fw_resource_version;
} ESRT_HEADER;

static EFI_STATUS
read_file(EFI_FILE_HANDLE root, CHAR16 *path, UINTN max, UINT8 **buf, UINTN *size)
{
	EFI_FILE_HANDLE fh;
	EFI_FILE_INFO *info;
	EFI_STATUS rc;
	UINTN len;

	rc = uefi_call_wrapper(root->Open, 5, root, &fh, path, EFI_FILE_MODE_READ, 0);
	if (EFI_ERROR(rc))
		return rc;
	info = LibFileInfo(fh);
	if (info == NULL) {
		uefi_call_wrapper(fh->Close, 1, fh);
		return EFI_DEVICE_ERROR;
	}
	len = info->FileSize;
	FreePool(info);
	if (len > max) {
		uefi_call_wrapper(fh->Close, 1, fh);
		return EFI_BAD_BUFFER_SIZE;
	}
	*buf = AllocateZeroPool(len + 1);
	if (*buf == NULL) {
		uefi_call_wrapper(fh->Close, 1, fh);
		return EFI_OUT_OF_RESOURCES;
	}
	rc = uefi_call_wrapper(fh->Read, 3, fh, &len, *buf);
	uefi_call_wrapper(fh->Close, 1, fh);
	*size = len;
	return rc;
}

static EFI_STATUS
install_esrt(EFI_FILE_HANDLE root)
{
	UINT8 *entries = NULL;
	UINTN size = 0, count;
	ESRT_HEADER *table;
	EFI_STATUS rc;

	rc = read_file(root, L"\\EFI\\livefw\\esrt.bin", ESRT_MAX_ENTRIES * ESRT_ENTRY_SIZE,
		       &entries, &size);
	if (EFI_ERROR(rc)) {
		Print(L"livefw-boot: no ESRT installed (\\EFI\\livefw\\esrt.bin: %r)\n", rc);
		return rc;
	}
	if (size == 0 || size % ESRT_ENTRY_SIZE != 0) {
		Print(L"livefw-boot: esrt.bin is %d bytes, not a multiple of %d\n", size,
		      ESRT_ENTRY_SIZE);
		return EFI_INVALID_PARAMETER;
	}
	count = size / ESRT_ENTRY_SIZE;
	/* runtime data: in the memory map the kernel keeps (esrt.c accepts it) */
	rc = uefi_call_wrapper(BS->AllocatePool, 3, EfiRuntimeServicesData,
			       sizeof(ESRT_HEADER) + size, (VOID **)&table);
	if (EFI_ERROR(rc))
		return rc;
	table->fw_resource_count = (UINT32)count;
	table->fw_resource_count_max = (UINT32)count;
	table->fw_resource_version = 1;
	CopyMem((UINT8 *)(table + 1), entries, size);
	FreePool(entries);
	rc = uefi_call_wrapper(BS->InstallConfigurationTable, 2, &esrt_guid, table);
	if (EFI_ERROR(rc)) {
		Print(L"livefw-boot: InstallConfigurationTable(ESRT): %r\n", rc);
		return rc;
	}
	for (UINTN i = 0; i < count; i++) {
		UINT8 *e = (UINT8 *)(table + 1) + i * ESRT_ENTRY_SIZE;
		UINT32 *w = (UINT32 *)(e + 16);
		Print(L"livefw-boot: ESRT entry %d: %g type %d version %d lowest %d flags 0x%x "
		      L"last attempt %d status %d\n",
		      i, (EFI_GUID *)e, w[0], w[1], w[2], w[3], w[4], w[5]);
	}
	return EFI_SUCCESS;
}

static VOID
show_boot_current(VOID)
{
	UINT16 current = 0xffff;
	UINTN size = sizeof(current);
	EFI_STATUS rc = uefi_call_wrapper(RT->GetVariable, 5, L"BootCurrent",
					  &gEfiGlobalVariableGuid, NULL, &size, &current);
	if (EFI_ERROR(rc))
		Print(L"livefw-boot: BootCurrent: %r\n", rc);
	else
		Print(L"livefw-boot: started as Boot%04x\n", current);
}

EFI_STATUS
efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
	EFI_LOADED_IMAGE *self, *kernel_image;
	EFI_FILE_HANDLE root;
	EFI_DEVICE_PATH *path;
	EFI_HANDLE kernel;
	UINT8 *ascii = NULL;
	CHAR16 *cmdline;
	UINTN size = 0, i;
	EFI_STATUS rc;

	InitializeLib(image, systab);
	Print(L"livefw-boot: VM lane boot program (vm/efi/livefw-boot.c)\n");
	show_boot_current();
	rc = uefi_call_wrapper(BS->HandleProtocol, 3, image, &LoadedImageProtocol,
			       (VOID **)&self);
	if (EFI_ERROR(rc))
		return rc;
	root = LibOpenRoot(self->DeviceHandle);
	if (root == NULL) {
		Print(L"livefw-boot: cannot open the boot volume\n");
		return EFI_NOT_FOUND;
	}
	install_esrt(root); /* a missing ESRT is the kernel's and livefwd's to report */

	rc = read_file(root, L"\\EFI\\livefw\\cmdline.txt", CMDLINE_MAX, &ascii, &size);
	if (EFI_ERROR(rc)) {
		Print(L"livefw-boot: \\EFI\\livefw\\cmdline.txt: %r\n", rc);
		return rc;
	}
	while (size > 0 && (ascii[size - 1] == '\n' || ascii[size - 1] == '\r'))
		size--;
	cmdline = AllocateZeroPool((size + 1) * sizeof(CHAR16));
	if (cmdline == NULL)
		return EFI_OUT_OF_RESOURCES;
	for (i = 0; i < size; i++)
		cmdline[i] = ascii[i];

	path = FileDevicePath(self->DeviceHandle, L"\\EFI\\livefw\\vmlinuz.efi");
	rc = uefi_call_wrapper(BS->LoadImage, 6, FALSE, image, path, NULL, 0, &kernel);
	if (EFI_ERROR(rc)) {
		Print(L"livefw-boot: LoadImage(\\EFI\\livefw\\vmlinuz.efi): %r\n", rc);
		return rc;
	}
	rc = uefi_call_wrapper(BS->HandleProtocol, 3, kernel, &LoadedImageProtocol,
			       (VOID **)&kernel_image);
	if (EFI_ERROR(rc))
		return rc;
	kernel_image->LoadOptions = cmdline;
	kernel_image->LoadOptionsSize = (UINT32)((size + 1) * sizeof(CHAR16));
	Print(L"livefw-boot: starting the kernel: %s\n", cmdline);
	rc = uefi_call_wrapper(BS->StartImage, 3, kernel, NULL, NULL);
	Print(L"livefw-boot: the kernel returned: %r\n", rc);
	return rc;
}
