# Convenience front end over CMake. `make test` is what CI runs.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= /usr/bin/python3
CC ?= cc
MAKEFLAGS += --no-print-directory

.PHONY: all build deps test unit integration test-asan demo bench soak fuzz fuzz-build fuzz-short format clean install

all: build

deps:
	bash scripts/install-deps.sh

$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

integration: build
	PGWP_BINARY=$(abspath $(BUILD))/pgwire-proxy $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

test: deps
	$(MAKE) build
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) fuzz-short

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPGWP_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -L unit
	PGWP_BINARY=$(abspath $(ASAN_BUILD))/pgwire-proxy PGWP_SANITIZED=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

fuzz-build:
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPGWP_SANITIZE=ON -DPGWP_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Short bounded fuzzing, part of `make test`; `make fuzz FUZZ_SECONDS=600` for longer runs.
FUZZ_SECONDS ?= 20
fuzz-short:
	$(MAKE) fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz: FUZZ_SECONDS = 300
fuzz:
	$(MAKE) fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

demo: deps build
	bash scripts/demo.sh $(abspath $(BUILD))/pgwire-proxy

bench: deps build
	bash bench/run.sh $(abspath $(BUILD))/pgwire-proxy

# Mixed workload for SOAK_SECONDS (default 120); not part of `make test`.
soak: deps build
	PGWP_BINARY=$(abspath $(BUILD))/pgwire-proxy bash tests/soak.sh

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
