# The two commands of the README: `make demo` and `make test`.
# Both install missing Debian packages, configure and build with the CMake presets.
PRESET ?= release
JOBS ?= $(shell nproc)
BUILD := build/$(PRESET)

.PHONY: deps configure build demo test bench clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build --preset $(PRESET) -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

test: build
	@ctest --preset $(PRESET) -j $(JOBS)

bench: build
	@$(BUILD)/bench/bench_kernels

clean:
	rm -rf build
