# The two commands of the README: `make demo` and `make test`.
# Both install missing Debian packages, configure and build with the CMake presets.
PRESET ?= release
JOBS ?= $(shell nproc)
BUILD := build/$(PRESET)

.PHONY: deps configure build demo test test-asan-engine fuzz bench clean

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

# The engine's tests (actors, shutdown, failures, the shipped model through the engine)
# under AddressSanitizer + UBSan: any leak, use-after-free or UB fails the run.
test-asan-engine: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS) --target test_engine test_batch_policy
	@ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/asan/tests/actors/test_batch_policy
	@ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/asan/tests/actors/test_engine

# The libFuzzer targets of tests/fuzz (safetensors, pipeline files, model configs, the
# CLIP tokenizer, dump manifests), built with clang + ASan + UBSan in build/fuzz (CUDA off,
# only the libraries they need) and run for FUZZ_SECONDS each; a finding fails the run.
# 45 s each keeps build + 7 targets under ~10 minutes on CI's 2 cores (measured here:
# build 288 s while another build ran, 60 s runs gave 696 s in all); FUZZ_SECONDS=600 to dig.
FUZZ_SECONDS ?= 45
fuzz: deps
	@cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only" \
		-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSTAGECRAFT_CUDA=OFF -DSTAGECRAFT_FUZZ=ON >/dev/null
	@cmake --build build/fuzz -j $(JOBS) --target fuzz_targets
	@bash tests/fuzz/run.sh build/fuzz $(FUZZ_SECONDS)

bench: build
	@$(BUILD)/bench/bench_kernels

clean:
	rm -rf build
