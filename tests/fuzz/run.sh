#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for SECONDS each (default 60), under the
# ASan + UBSan build in BUILD (default build/fuzz). Each target starts from its seed
# corpus in tests/fuzz/corpus/<target> (left unchanged) plus what earlier runs found
# in BUILD/corpus/<target>. A crash, leak, UB report or timeout fails the run and
# leaves the input in BUILD/artifacts/<target>/: add it to the seeds once fixed.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build/fuzz}
SECONDS_EACH=${2:-60}
TARGETS=(fuzz_safetensors fuzz_pipeline_spec fuzz_model_config fuzz_clip_tokenizer fuzz_dump fuzz_job_request
         fuzz_wire_packet)
failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/$t"
  [ -x "$bin" ] || { echo "fuzz: $bin is not built (make fuzz builds it)"; exit 1; }
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  log="$BUILD/artifacts/$t/last.log"
  # -max_len: the seeds are small and the readers' limits are per file, so 64 KiB finds
  # as much as more would, faster. -rss_limit_mb: no input may make a reader hold 2 GB.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$bin" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$BUILD/artifacts/$t/" "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  stats=$(grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | awk '{printf "%s ", $2}')
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "fuzz: $t ok (${SECONDS_EACH}s; runs, peak MB: ${stats}; ${cov})"
  else
    echo "fuzz: $t FAILED (exit $rc); the input is in $BUILD/artifacts/$t/, the log in $log:"
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -20
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: failed: ${failed[*]}"; exit 1; }
