# VM lane (issue 16): livefwd with its real provider on a real Linux kernel in QEMU.
#
#   make vm-test                    every scenario; one line per scenario
#   make vm-test VM_SCENARIOS=liveupdate   only some
#   make vm-kernel                  only build (or find) the cached kernel
#
# Not part of `make test`. The first run builds Linux (Debian sid's linux-source,
# cached in ~/.cache/livefw-vm, ~15-40 min on 2 shared cores at nice 19); later runs
# reuse it. Tools come from apt only when missing (see vm/tools.sh).

.PHONY: vm-test vm-kernel vm-tools

VM_SCENARIOS ?=

vm-tools:
	vm/tools.sh

vm-kernel:
	vm/build-kernel.sh

vm-test: venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	python3 vm/run.py $(VM_SCENARIOS)
