# Robustness (issue 9): the fault matrix, load, access and parser fuzzing.
#
#   make robust   every fault-matrix case (rewrites tests/robust/MATRIX.md), the 60 s
#                 load with 1,000 simulated devices and 50 clients, and the rest of
#                 tests/robust and tests/fuzz
#   make fuzz     the parser fuzz targets with many more examples (FUZZ_EXAMPLES each)
#
# `make test` already runs one fault case per plugin (plus the regression cases), a
# short load (100 devices, 10 clients, 5 s) and the fuzz targets with a few dozen
# examples each: every test here not marked `slow`.

.PHONY: robust fuzz

FUZZ_EXAMPLES ?= 10000

robust: venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	LIVEFW_WRITE_MATRIX=1 $(BIN)/pytest -q tests/robust tests/fuzz

fuzz: venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict --no-deps
	LIVEFW_FUZZ=1 LIVEFW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q \
		--timeout=0 tests/fuzz
