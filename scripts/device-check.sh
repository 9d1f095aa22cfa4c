#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU, in under ~8 minutes:
#   nvidia-smi, install deps, configure build/release with CUDA, build the CUDA kernel
#   test and the kernel benchmarks (then the rest of the tree, best effort), run
#   `ctest -R cuda`, bench_kernels_gpu and bench_kernels --quick, then print one
#   summary line per step. Step time limits add up to under 8 minutes of normal runs.
# Setup steps stop the script when they fail; after the build every check runs, so
# one run shows everything. The summary prints on any exit; the status is non-zero
# when a step failed.
#
#   scripts/device-check.sh                      # builds for the local GPU only
#   SC_CUDA_ARCHS="80;90" scripts/device-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
declare -a summary=()
failed=0
step() {  # step NAME TIMEOUT_S CMD...: runs CMD with a time limit and records the outcome
  local name=$1 limit=$2
  shift 2
  echo "==> ${name}"
  local t0 rc=0
  t0=$(date +%s)
  timeout "${limit}" "$@" || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ "${rc}" -eq 0 ]; then
    summary+=("PASS  ${name} (${dt}s)")
  else
    [ "${rc}" -eq 124 ] && summary+=("FAIL  ${name} (timed out after ${limit}s)") || summary+=("FAIL  ${name} (exit ${rc}, ${dt}s)")
    failed=1
  fi
  return "${rc}"
}

print_summary() {
  echo
  echo "==== device-check summary ($(( $(date +%s) - start ))s) ===="
  [ ${#summary[@]} -gt 0 ] && printf '%s\n' "${summary[@]}"
  [ "${failed}" -eq 0 ] && echo "all steps passed" || echo "some steps FAILED"
}
trap print_summary EXIT

nvidia-smi

jobs=$(nproc)
archs=${SC_CUDA_ARCHS:-native}
build=build/release

step "install-deps" 90 scripts/install-deps.sh
step "configure (${build}, CUDA archs ${archs})" 90 \
  cmake --preset release -DSTAGECRAFT_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${archs}"
targets=(test_kernels_cuda bench_kernels_gpu)
# grep without -q reads all input: with -q, ninja could die of SIGPIPE and pipefail
# would report the target as missing.
if ninja -C "${build}" -t targets all 2>/dev/null | grep '^bench_kernels:' >/dev/null; then
  targets+=(bench_kernels)
fi
step "build ${targets[*]}" 240 cmake --build "${build}" -j "${jobs}" --target "${targets[@]}"

set +e  # from here on, run every check and report them all
# The rest of the tree holds the other CUDA tests (lanes, transports); a failure there
# must not hide the kernel results, and unbuilt test executables are left out below.
step "build everything else" 150 cmake --build "${build}" -j "${jobs}"
step "ctest -R cuda" 90 ctest --test-dir "${build}" -R cuda -E _NOT_BUILT --output-on-failure
step "bench_kernels_gpu" 90 "${build}/bench/kernels_gpu/bench_kernels_gpu"
if [ -x "${build}/bench/kernels/bench_kernels" ]; then
  step "bench_kernels --quick" 60 "${build}/bench/kernels/bench_kernels" --quick
else
  summary+=("SKIP  bench_kernels --quick (no bench_kernels target in this tree)")
fi
exit "${failed}"
