#!/usr/bin/env bash
# GPU checks in two halves, because the machine lent with a GPU (an H200: CUDA 13, CMake,
# ninja, PyTorch) has none of the Debian libraries the project links and no package
# registry, and its time is short (15 minutes, all tries together):
#
#   scripts/device-check.sh prepare       # HERE (Debian, nvcc, no GPU): build, gather, verify, pack
#   scripts/device-check.sh run           # THERE: unpack and run; reads only the bundle
#
# `prepare` builds the CUDA tests, the GPU benchmarks and `stagecraft` for sm_90 in
# build/device (SC_CUDA_ARCHS overrides, JOBS the parallelism), gathers them with every
# shared library they load from outside CUDA (glibc excepted, see below) into
# build/device/bundle-tree, proves that they start with nothing else on the library path
# (`check`, as CI does), and packs the tree into build/device/bundle/stagecraft-device.tar.xz
# (must stay under 60 MiB; the working tree plus carry must fit 64 MiB).
# On the GPU machine, through the device tool:
#
#   run(command="bash scripts/device-check.sh run", carry=["build/device/bundle"], timeout_s=540)
#
# `run` unpacks into a temporary folder, sets LD_LIBRARY_PATH to the bundle's lib/ plus
# CUDA's libraries (/usr/local/cuda/lib64, else the nvidia-* wheels PyTorch installed), runs
# the GPU tests and benchmarks with a time limit each (they add up to under 8 minutes) and
# prints one summary: pass/fail per step, the doctest counts, the GPU benchmark figures.
# Logs go to $OUT/device-check/ when $OUT is set (the device tool brings $OUT back).
#
# glibc: its libraries (libc, libm, libdl, librt, libpthread, libresolv, the loader) are
# not on the library path: a libc must match its loader, and the loader is the host's.
# Debian's libstdc++ needs glibc 2.36; where the host's glibc is older, `run` starts each
# binary through the copy of Debian's loader and glibc kept in the bundle's glibc/ instead
# (SC_BUNDLED_GLIBC=1 forces that).
#
#   scripts/device-check.sh gather BUILD OUT   # gather BUILD's binaries + libraries into OUT
#   scripts/device-check.sh check OUT          # OUT's binaries resolve every library inside OUT
#                                              # (or CUDA's folder, or glibc) and start
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_LIB=${SC_CUDA_LIB:-/usr/local/cuda/lib64}
DEVICE_BUILD=build/device
TREE=${DEVICE_BUILD}/bundle-tree
PACK_DIR=${DEVICE_BUILD}/bundle
PACK=${PACK_DIR}/stagecraft-device.tar.xz
MAX_PACK_BYTES=$((60 * 1024 * 1024))

# What the bundle holds: name and whether a build must have it. The doctest binaries with
# GPU cases, the GPU benchmarks, the CPU kernel benchmark (its figures beside the GPU's) and
# the command itself (selftest and generate on cuda:0).
BINARIES=(stagecraft:required test_kernels_cuda:required bench_kernels_gpu:required bench_kernels:optional
          test_lane:optional test_allocator:optional test_tensor:optional
          test_transport_gpu:optional cuda_ipc_peer:optional bench_transport_gpu:optional)

# glibc's own libraries: they must come from the same glibc as the loader that runs them.
is_glibc() {
  case "$(basename "$1")" in
    ld-linux-x86-64.so.2 | libc.so.6 | libm.so.6 | libdl.so.2 | librt.so.1 | libpthread.so.0 | libresolv.so.2 | \
      libutil.so.1 | libanl.so.1 | libnsl.so.1 | libmvec.so.1 | libBrokenLocale.so.1 | libthread_db.so.1 | \
      libc_malloc_debug.so.0 | libnss_*) return 0 ;;
  esac
  return 1
}
GLIBC_FALLBACK=(ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 libresolv.so.2 libmvec.so.1)

die() { echo "device-check: $*" >&2; exit 1; }

# ------------------------------------------------------------------ gather BUILD OUT
gather() {
  local build=$1 out=$2
  [ -d "${build}" ] || die "no build folder ${build}"
  rm -rf "${out}"
  mkdir -p "${out}/bin" "${out}/lib" "${out}/glibc"
  local entry name need path
  for entry in "${BINARIES[@]}"; do
    name=${entry%%:*} need=${entry#*:}
    path=$(find "${build}" -path '*/CMakeFiles' -prune -o -type f -name "${name}" -perm -u+x -print | head -n 1)
    if [ -z "${path}" ]; then
      [ "${need}" = required ] && die "${build} has no ${name}; build it first"
      continue
    fi
    cp "${path}" "${out}/bin/${name}"
    strip "${out}/bin/${name}"
  done
  # Every library a binary needs, as the system resolves it here; CUDA's stay out (the GPU
  # machine has its own, and cuBLAS alone is 600 MB), glibc's stay out (see the header).
  local lib real
  for path in "${out}"/bin/*; do
    if ldd "${path}" | grep -q 'not found'; then
      ldd "${path}" | grep 'not found' >&2
      die "$(basename "${path}") needs a library this machine lacks"
    fi
    while read -r lib; do
      real=$(readlink -f "${lib}")
      case "${real}" in /usr/local/cuda*) continue ;; esac
      is_glibc "${lib}" && continue
      [ -e "${out}/lib/$(basename "${lib}")" ] || cp -L "${lib}" "${out}/lib/$(basename "${lib}")"
    done < <(ldd "${path}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
  done
  strip --strip-unneeded "${out}"/lib/*.so* 2>/dev/null || true
  for lib in "${GLIBC_FALLBACK[@]}"; do
    [ -e "/lib/x86_64-linux-gnu/${lib}" ] && cp -L "/lib/x86_64-linux-gnu/${lib}" "${out}/glibc/${lib}"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "${out}/glibc/ld-linux-x86-64.so.2"
  # The newest glibc symbol version anything in the bundle asks for: `run` compares it
  # with the host's to choose its loader.
  local needed
  needed=$(for f in "${out}"/bin/* "${out}"/lib/*; do objdump -T "${f}" 2>/dev/null; done |
    grep -o 'GLIBC_2\.[0-9]*' | sort -u -t. -k2,2n | tail -n 1 | sed 's/GLIBC_//')
  {
    echo "built_from=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +dirty)"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cuda_archs=$(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:STRING=//p' "${build}/CMakeCache.txt" 2>/dev/null)"
    echo "glibc_needed=${needed}"
  } >"${out}/MANIFEST"
  grep -o 'set(CMAKE_CUDA_COMPILER_VERSION "[^"]*"' "${build}"/CMakeFiles/*/CMakeCUDACompiler.cmake 2>/dev/null |
    head -n 1 | sed 's/.*"\(.*\)"/cuda_version=\1/' >>"${out}/MANIFEST" || true
  echo "gathered $(ls "${out}/bin" | wc -l) binaries and $(ls "${out}/lib" | wc -l) libraries into ${out} ($(du -sh "${out}" | cut -f1)); glibc needed: ${needed}"
}

# ------------------------------------------------------------------ check OUT
# Each binary's libraries must resolve inside OUT/lib or CUDA_LIB, or be glibc's from the
# system folder, with ld.so.cache hidden (--inhibit-cache) — and the binary must start.
# --inhibit-cache alone proves nothing: the loader still searches its built-in system
# folders (/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu), where Debian keeps every
# library, and RUNPATH (the build's /usr/lib/x86_64-linux-gnu/openblas-pthread) too. So
# the check reads where each library was found (the loader's --list) and refuses any
# path outside those places: a library missing from the bundle shows up as found in a
# system folder, exactly what would be "not found" on the GPU machine.
start_args() {
  case "$1" in
    stagecraft) echo --help ;;
    test_*) echo --list-test-cases ;;
    *) echo --help ;;  # benchmarks: --help prints usage or (no GPU) says so and exits
  esac
}

check_one() {  # check_one LABEL LOADER LIBPATH GLIBC_DIR BIN OUT_LIB -> prints problems, returns 1 on any
  local label=$1 loader=$2 libpath=$3 glibc_dir=$4 bin=$5 out_lib=$6 bad=0 line lib where real
  local listing
  listing=$("${loader}" --inhibit-cache --library-path "${libpath}" --list "${bin}" 2>&1) || {
    echo "  [${label}] $(basename "${bin}"): the loader refused it:"; echo "${listing}" | sed 's/^/    /'; return 1; }
  while read -r line; do
    case "${line}" in
      *"=> not found"*) echo "  [${label}] $(basename "${bin}"): ${line%%=>*}not found"; bad=1; continue ;;
      *"=>"*) lib=${line%% =>*} where=$(echo "${line}" | awk '{print $3}') ;;
      *) continue ;;
    esac
    lib=$(echo "${lib}" | tr -d '[:space:]')
    real=$(readlink -f "${where}")
    case "${real}" in
      "$(readlink -f "${out_lib}")"/*) continue ;;
      "$(readlink -f "${CUDA_LIB}")"/*) continue ;;
    esac
    if is_glibc "${lib}" && [ "$(dirname "${real}")" = "$(readlink -f "${glibc_dir}")" ]; then continue; fi
    echo "  [${label}] $(basename "${bin}"): ${lib} comes from ${where}, outside the bundle"
    bad=1
  done <<<"${listing}"
  # Starting it catches what --list cannot: a symbol version the bundled library lacks.
  local rc=0 log
  # shellcheck disable=SC2046
  log=$(timeout 60 "${loader}" --inhibit-cache --library-path "${libpath}" "${bin}" $(start_args "$(basename "${bin}")") 2>&1) || rc=$?
  if [ "${rc}" -eq 127 ] || echo "${log}" | grep -q 'error while loading shared libraries\|version .* not found'; then
    echo "  [${label}] $(basename "${bin}"): does not start (exit ${rc}):"; echo "${log}" | head -n 5 | sed 's/^/    /'
    bad=1
  fi
  return "${bad}"
}

check() {
  local out=$1 bad=0 bin n=0
  [ -d "${out}/bin" ] || die "${out} is not a bundle (no bin/)"
  local out_abs cuda_abs
  out_abs=$(readlink -f "${out}")
  cuda_abs=$(readlink -f "${CUDA_LIB}")
  for bin in "${out_abs}"/bin/*; do
    n=$((n + 1))
    # The host's loader and glibc (the normal case on the GPU machine) ...
    check_one "host glibc" /lib64/ld-linux-x86-64.so.2 "${out_abs}/lib:${cuda_abs}" /lib/x86_64-linux-gnu "${bin}" "${out_abs}/lib" || bad=1
    # ... and the bundle's own, for a host whose glibc is older than the bundle needs.
    check_one "bundled glibc" "${out_abs}/glibc/ld-linux-x86-64.so.2" "${out_abs}/lib:${out_abs}/glibc:${cuda_abs}" "${out_abs}/glibc" \
      "${bin}" "${out_abs}/lib" || bad=1
  done
  if [ "${bad}" -ne 0 ]; then
    echo "device bundle ${out}: some binaries need libraries from outside it (above)"
    return 1
  fi
  echo "device bundle ${out}: ${n} binaries resolve every library inside it (or CUDA's ${CUDA_LIB}) and start, with the host's loader and with the bundled glibc"
}

# ------------------------------------------------------------------ prepare
prepare() {
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "prepare needs nvcc (the CUDA toolkit)"
  local archs=${SC_CUDA_ARCHS:-90} jobs=${JOBS:-2}
  cmake -S . -B "${DEVICE_BUILD}" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTAGECRAFT_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=${archs}" >/dev/null
  local targets=() entry name
  local have
  have=$(ninja -C "${DEVICE_BUILD}" -t targets all 2>/dev/null)
  for entry in "${BINARIES[@]}"; do
    name=${entry%%:*}
    if grep -q "^${name}:" <<<"${have}"; then targets+=("${name}"); fi
  done
  echo "building ${targets[*]} in ${DEVICE_BUILD} (sm ${archs}, -j${jobs})"
  cmake --build "${DEVICE_BUILD}" -j "${jobs}" --target "${targets[@]}"
  gather "${DEVICE_BUILD}" "${TREE}"
  check "${TREE}"
  mkdir -p "${PACK_DIR}"
  rm -f "${PACK}"
  tar -C "${TREE}" -cf - . | xz -T2 -6 >"${PACK}"
  local bytes
  bytes=$(stat -c %s "${PACK}")
  [ "${bytes}" -le "${MAX_PACK_BYTES}" ] || die "${PACK} is $((bytes / 1048576)) MiB, over the 60 MiB limit"
  echo "packed ${PACK}: $((bytes / 1024)) KiB ($(du -sh "${TREE}" | cut -f1) unpacked)"
  echo "on the GPU machine: run(command=\"bash scripts/device-check.sh run\", carry=[\"${PACK_DIR}\"], timeout_s=540)"
}

# ------------------------------------------------------------------ run (GPU machine)
run_device() {
  [ -f "${PACK}" ] || die "no ${PACK}: run 'scripts/device-check.sh prepare' on the build machine and carry ${PACK_DIR}"
  local start
  start=$(date +%s)
  local b
  b=$(mktemp -d /tmp/stagecraft-device.XXXXXX)
  if command -v xz >/dev/null; then
    xz -dc "${PACK}" | tar -C "${b}" -xf -
  else  # python's lzma reads it where xz is not installed
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "${PACK}" "${b}"
  fi
  local logs=${OUT:-${b}}/device-check
  mkdir -p "${logs}"
  cat "${b}/MANIFEST"

  # CUDA's libraries: the toolkit's folder, else the nvidia-* wheels next to PyTorch.
  local cuda_lib=${CUDA_LIB}
  if [ ! -e "${cuda_lib}/libcublasLt.so.13" ]; then
    local found
    found=$(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null |
      while read -r d; do find "${d}/nvidia" -name 'libcublasLt.so.13*' 2>/dev/null; done | head -n 1)
    [ -n "${found}" ] && cuda_lib=$(dirname "${found}")
    echo "no libcublasLt.so.13 in ${CUDA_LIB}; using ${cuda_lib:-nothing}"
  fi
  local extra=""
  if [ ! -e "${cuda_lib}/libnccl.so.2" ]; then  # NCCL is loaded on first use (transport/nccl_channel)
    local nccl
    nccl=$(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null |
      while read -r d; do find "${d}/nvidia" -name 'libnccl.so.2' 2>/dev/null; done | head -n 1)
    [ -n "${nccl}" ] && extra=":$(dirname "${nccl}")"
  fi
  export LD_LIBRARY_PATH="${b}/lib:${cuda_lib}${extra}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"

  # The host's glibc when it is new enough for the bundle, else the bundle's own.
  local host_glibc needed launcher=()
  host_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  needed=$(sed -n 's/^glibc_needed=//p' "${b}/MANIFEST")
  if [ -n "${SC_BUNDLED_GLIBC:-}" ] || { [ -n "${host_glibc}" ] &&
    [ "$(printf '%s\n%s\n' "${needed}" "${host_glibc}" | sort -V | head -n 1)" != "${needed}" ]; }; then
    echo "host glibc ${host_glibc} (bundle needs ${needed}${SC_BUNDLED_GLIBC:+; SC_BUNDLED_GLIBC set}): starting binaries with the bundled glibc"
    launcher=("${b}/glibc/ld-linux-x86-64.so.2" --library-path "${b}/lib:${b}/glibc:${LD_LIBRARY_PATH}")
  fi
  export SC_DEVICE_LAUNCHER="${launcher[*]}"  # for tests that start a second process
  export SC_CUDA_IPC_PEER="${b}/bin/cuda_ipc_peer"  # test_transport_gpu's other process

  declare -a summary=()
  local failed=0
  step() {  # step NAME TIMEOUT_S BIN ARGS...: runs with a time limit, logs, records the outcome
    local name=$1 limit=$2 bin=$3
    shift 3
    echo "==> ${name}"
    local t0 rc=0 log="${logs}/${name//[^A-Za-z0-9_.-]/_}.log"
    t0=$(date +%s)
    local run=("${launcher[@]}" "${b}/bin/${bin}")
    case "${bin}" in
      *.py) run=(python3 "${bin}") ;;  # a check script of the tree, driving the bundle's binaries
      *) if [ ! -x "${b}/bin/${bin}" ]; then
           summary+=("SKIP  ${name} (not in this bundle)")
           return 0
         fi ;;
    esac
    timeout "${limit}" "${run[@]}" "$@" >"${log}" 2>&1 || rc=$?
    tail -n 40 "${log}"
    local dt=$(($(date +%s) - t0)) counts
    counts=$(grep -h '^\[doctest\] test cases:' "${log}" | tail -n 1 | sed 's/\[doctest\] //')
    if [ "${rc}" -eq 0 ]; then
      summary+=("PASS  ${name} (${dt}s)${counts:+  ${counts}}")
    else
      failed=1
      if [ "${rc}" -eq 124 ]; then summary+=("FAIL  ${name} (timed out after ${limit}s)${counts:+  ${counts}}")
      else summary+=("FAIL  ${name} (exit ${rc}, ${dt}s)${counts:+  ${counts}}"); fi
    fi
  }

  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "${logs}/nvidia-smi.log" || true
  set +e  # every step runs; the summary tells them apart
  # Every library resolved on this host before anything runs: a miss is named here once
  # instead of as a loader error in each step.
  local loader=("${launcher[@]}") missing
  [ ${#loader[@]} -eq 0 ] && loader=(/lib64/ld-linux-x86-64.so.2)
  missing=$(for f in "${b}"/bin/*; do "${loader[@]}" --list "${f}" 2>&1 | grep 'not found' | sed "s|^|$(basename "${f}"): |"; done)
  if [ -z "${missing}" ]; then summary+=("PASS  libraries: every binary resolves all it links (bundle + ${cuda_lib})")
  else failed=1; summary+=("FAIL  libraries: $(echo "${missing}" | tr -s '\t\n' '  ')"); echo "${missing}"; fi
  # The limits add up to 480 s, so with the unpacking the run stays near 8 minutes (in
  # practice well under: most steps take a fraction of their limit).
  # The doctest binaries with GPU cases: every case of the CUDA kernel test, the CUDA cases
  # of the others (filters are case-insensitive).
  step "test_kernels_cuda" 75 test_kernels_cuda
  step "test_lane (cuda cases)" 20 test_lane --test-case='*cuda*'
  step "test_allocator (cuda, pinned cases)" 20 test_allocator --test-case='*cuda*,*pinned*'
  step "test_tensor (cuda cases)" 20 test_tensor --test-case='*cuda*'
  step "test_transport_gpu" 60 test_transport_gpu
  step "stagecraft selftest" 25 stagecraft selftest
  step "stagecraft generate --device cuda:0" 40 stagecraft generate --model models/tiny-shapes --device cuda:0 \
    --prompt "a red circle in the center on a blue background" --seed 7 --out "${logs}/generate-cuda.png"
  # A split pipeline with GPU stages: over cuda_ipc (two processes, one GPU) and over zmq
  # (pinned staging) the PNGs are the one-process GPU run's bytes; nccl forced on one GPU
  # fails the job clearly, never hangs.
  STAGECRAFT_BIN="${b}/bin/stagecraft" STAGECRAFT_SOURCE_DIR="$(pwd)" GPU_SPLIT_LOGS="${logs}/gpu-split" \
    step "split pipeline on the GPU (cuda_ipc, zmq staging, nccl refusal)" 45 tests/cli/gpu_split_check.py
  step "bench_kernels_gpu" 90 bench_kernels_gpu
  step "bench_transport_gpu" 45 bench_transport_gpu
  step "bench_kernels --quick" 40 bench_kernels --quick
  set -e

  echo
  echo "==== device-check summary ($(($(date +%s) - start))s, $(sed -n 's/^built_from=//p' "${b}/MANIFEST")) ===="
  printf '%s\n' "${summary[@]}"
  echo "---- GPU figures ----"
  grep -h -E 'PASS|MISS|GB/s|TFLOP|^bench_' "${logs}/bench_kernels_gpu.log" "${logs}/bench_transport_gpu.log" 2>/dev/null || true
  [ "${failed}" -eq 0 ] && echo "all steps passed" || echo "some steps FAILED (logs: ${logs})"
  rm -rf "${b}/bin" "${b}/lib" "${b}/glibc"
  return "${failed}"
}

case "${1:-}" in
  prepare) prepare ;;
  gather) [ $# -eq 3 ] || die "usage: $0 gather BUILD OUT"; gather "$2" "$3" ;;
  check) [ $# -eq 2 ] || die "usage: $0 check OUT"; check "$2" ;;
  run) run_device ;;
  *) sed -n '2,33p' "$0"; exit 2 ;;
esac
