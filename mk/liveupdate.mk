# Live Update (issue 14): tests/unit/test_kexec_syscall.py runs the real provider's
# kexec under strace, with the reboot(2) call answered by strace (EPERM injected) in a
# process without CAP_SYS_BOOT, and checks the exact arguments. strace is installed
# only when missing.

.PHONY: liveupdate-deps

test-deps: liveupdate-deps

liveupdate-deps:
	@tools/apt-need strace:strace
