#!/usr/bin/env bash
# test.sh: install what is missing, build raftkv, run every test suite in the
# normal build and under AddressSanitizer + UBSan, then fuzz briefly.
#
#   scripts/test.sh [--quick] [--full-faults] [--fuzz-seconds N]
#                   [--no-sanitize] [--no-fuzz]
#
#   --quick          the normal build's tests only (no sanitizer, no fuzz)
#   --full-faults    the fault-injection suite's full tier: 3 rounds of 5 s
#                    per test instead of one of 2.5 s, each test again on
#                    7 nodes with other choices (docs/faults.md); and the
#                    crash-point sweep over every boundary of every phase
#                    (about 10 minutes; tests/cluster/test_crashpoints.c);
#                    and the fault-injection suites (faults_*), the
#                    crash-point sweep and the simulator's soak under the
#                    sanitizers too (the default run has them in the
#                    normal build only)
#   --fuzz-seconds N run each libFuzzer target N seconds (default 10)
#   --no-sanitize    skip the sanitizer build
#   --no-fuzz        skip the fuzz targets
# Environment: RAFTKV_SEED fixes the seed of randomized tests; JOBS the
# build parallelism (default: number of cores); TEST_JOBS how many of the
# normal build's suites run at once (default: cores + 1, as they mostly
# wait on timers; the sanitizer build's run JOBS at once);
# RAFTKV_REQUIRE_ALL=1 makes a test that would be skipped (it needs root,
# nft, a tmpfs mount) fail instead. It is set when this script runs as
# root, once scripts/deps.sh has installed every package
# (RAFTKV_REQUIRE_ALL=0 overrides).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
sanitize=1 fuzz=1 fuzz_seconds=10
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) sanitize=0 fuzz=0 ;;
        --full-faults) export RAFTKV_FAULT_TIER=full ;;
        --no-sanitize) sanitize=0 ;;
        --no-fuzz) fuzz=0 ;;
        --fuzz-seconds) fuzz_seconds=${2:?--fuzz-seconds needs a number}; shift ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
jobs=${JOBS:-$(nproc)}
test_jobs=${TEST_JOBS:-$((jobs + 1))}

scripts/deps.sh
# As root with every package installed, every test can run here: a skip
# would hide a test that silently stopped running.
if [ "$(id -u)" -eq 0 ]; then
    export RAFTKV_REQUIRE_ALL=${RAFTKV_REQUIRE_ALL:-1}
fi
if [ "${RAFTKV_REQUIRE_ALL:-0}" = 1 ]; then
    echo "==> RAFTKV_REQUIRE_ALL=1: a test that would be skipped fails"
fi

build_and_test() { # dir, description, test jobs, ctest exclude regex, cmake args...
    local dir=$1 what=$2 tj=$3 exclude=$4
    shift 4
    echo "==> $what: configure and build in $dir"
    cmake -S "$root" -B "$dir" -DRAFTKV_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
    echo "==> $what: tests${exclude:+ (all but $exclude)}, $tj at a time"
    (cd "$dir" && ctest --output-on-failure -j "$tj" --timeout 900 \
        ${exclude:+-E "$exclude"})
}

# The fault-injection suites (faults_*: 100 s each for lab and nemesis,
# 25-35 s for the others, longer under the sanitizers), the crash-point
# sweep (crashpoints: 76 s under them) and the simulator's soak
# (raft_soak: 64 s under them) run in the normal build; under the
# sanitizers only with --full-faults, so that the default run stays
# within CI's budget. Every other suite runs under the sanitizers too: the
# same code paths (kill -9, restarts, power loss and failed writes in
# storage, snapshots, leases, watches) without the sweeps and the random
# fault schedules.
asan_exclude='^(faults_.*|crashpoints|raft_soak)$'
if [ "${RAFTKV_FAULT_TIER:-quick}" = full ]; then
    asan_exclude=
fi

build_and_test build "normal build" "$test_jobs" ""
if [ "$sanitize" = 1 ]; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        build_and_test build-asan "sanitizer build" "$jobs" "$asan_exclude" \
            -DRAFTKV_SANITIZE=ON
fi

if [ "$fuzz" = 1 ]; then
    echo "==> fuzz: build with clang in build-fuzz"
    CC=clang cmake -S "$root" -B build-fuzz -DRAFTKV_FUZZ=ON >/dev/null
    cmake --build build-fuzz -j "$jobs" --target fuzz_frame fuzz_dispatch
    for target in frame dispatch; do
        scratch=$(mktemp -d)
        echo "==> fuzz: fuzz_$target for ${fuzz_seconds}s from tests/fuzz/corpus/$target"
        if ! build-fuzz/tests/fuzz/fuzz_$target -max_total_time="$fuzz_seconds" \
                -max_len=4096 -print_final_stats=1 -artifact_prefix="$scratch/" \
                "$scratch" "tests/fuzz/corpus/$target" >"$scratch/log" 2>&1; then
            tail -50 "$scratch/log"
            echo "fuzz_$target FAILED; the crashing input is in $scratch"
            exit 1
        fi
        grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$scratch/log" || true
        rm -rf "$scratch"
    done
fi
echo "==> all tests passed"
