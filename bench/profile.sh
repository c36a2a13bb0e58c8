#!/usr/bin/env bash
# profile.sh: where the CPU goes for one workload. Starts a fresh 3-node
# cluster (scripts/cluster.sh), drives it with kvbench for --duration,
# and over the middle of the run records the leader with perf and counts
# every process's CPU time. Prints the kvbench line, CPU seconds of the
# leader, the followers and kvbench, and the leader's top shared objects
# and functions (self time).
#
#   bench/profile.sh OP [--clients N] [--conns N] [--duration 12s] [--top N]
#
# OP: put, get, range, txn, lease, keepalive, watch (kvbench --op); the
# same knobs as bench/compare.sh (16-byte keys over 10,000, 256-byte
# values; get prefills, range reads 100 keys). Needs perf (Debian:
# linux-perf) and the right to use it (root, or
# kernel.perf_event_paranoid <= 1). Uses RAFTKV_PORT (default 27301) and
# a cluster directory of its own, wiped at the end; perf.data is kept in
# $PROFILE_OUT (default a new directory under /tmp).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
op=${1:-}
[ -n "$op" ] && shift || true
clients=64 conns=64 duration=12 top=25
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --duration) duration=${2:?}; duration=${duration%s}; shift ;;
        --top) top=${2:?}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "profile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$op" in
    put|get|range|txn|lease|keepalive|watch) ;;
    *) echo "profile.sh: OP is one of put get range txn lease keepalive watch (see --help)" >&2; exit 2 ;;
esac
case "$duration" in ''|*[!0-9]*) echo "profile.sh: --duration wants seconds, e.g. 12s" >&2; exit 2 ;; esac
if [ "$duration" -lt 6 ]; then
    echo "profile.sh: --duration must be at least 6s (perf records the middle)" >&2
    exit 2
fi
command -v perf >/dev/null || {
    echo "profile.sh: needs perf (apt-get install linux-perf)" >&2
    exit 1
}
bdir=${RAFTKV_BUILD_DIR:-$root/build}
export RAFTKV_BUILD_DIR=$bdir
if [ ! -x "$bdir/bench/kvbench" ] || [ ! -x "$bdir/kvserver/kvserver" ]; then
    cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$bdir" -j "$(nproc)" --target kvserver kvctl kvbench >/dev/null
fi
export RAFTKV_PORT=${RAFTKV_PORT:-27301}
out=${PROFILE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/raftkv-profile-XXXXXX")}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-profile-cluster-XXXXXX")
export RAFTKV_CLUSTER_DIR=$work/cluster
cleanup() { scripts/cluster.sh wipe >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

scripts/cluster.sh start 3 >/dev/null
eps=127.0.0.1:$RAFTKV_PORT,127.0.0.2:$RAFTKV_PORT,127.0.0.3:$RAFTKV_PORT
leader=""
for _ in $(seq 1 20); do
    leader=$("$bdir/clerk/kvctl" --cluster "$eps" status 2>/dev/null |
        sed -n 's/^id=\([0-9]*\) .* role=leader .*/\1/p' | head -1) || true
    [ -n "$leader" ] && break
    sleep 0.5
done
[ -n "$leader" ] || { echo "profile.sh: no leader found" >&2; exit 1; }
pid_of() { cat "$RAFTKV_CLUSTER_DIR/node$1.pid"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pre=()
case "$op" in
    get) pre=(--prefill) ;;
    range) pre=(--range-keys 100) ;;
    watch) pre=(--watchers 1000) ;;
    lease) pre=(--lease-ttl 10) ;;
    keepalive) pre=(--leases 1000) ;;
esac
c=$clients
[ "$op" = watch ] && c=4 conns=4
"$bdir/bench/kvbench" --cluster "$eps" --op "$op" --clients "$c" --conns "$conns" \
    --duration "${duration}s" --key-size 16 --val-size 256 --key-space 10000 \
    "${pre[@]}" >"$out/kvbench.txt" 2>&1 &
bench=$!
# Skip the start (connections, prefill) and the end of the run.
window=$((duration / 2))
sleep $(((duration - window) / 2))
declare -A before
for i in 1 2 3; do before[$i]=$(cpu_ticks "$(pid_of $i)"); done
bench_before=$(cpu_ticks $bench)
perf record -F 999 -g -p "$(pid_of "$leader")" -o "$out/perf.data" -- sleep "$window" \
    >/dev/null 2>"$out/perf-record.txt" || {
    echo "profile.sh: perf record failed: $(tail -1 "$out/perf-record.txt")" >&2
    kill $bench 2>/dev/null || true
    exit 1
}
hz=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'; }
echo "# $op: CPU seconds over the middle ${window} s of the run"
for i in 1 2 3; do
    role=follower
    [ "$i" = "$leader" ] && role=leader
    echo "node $i ($role): $(secs $(($(cpu_ticks "$(pid_of $i)") - before[$i])))"
done
echo "kvbench: $(secs $(($(cpu_ticks $bench) - bench_before)))"
wait $bench || { echo "profile.sh: kvbench failed:" >&2; cat "$out/kvbench.txt" >&2; exit 1; }
grep '^op=' "$out/kvbench.txt"
echo "# the leader's samples by shared object (self)"
perf report -i "$out/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep '%' | head -8
echo "# the leader's top functions (self)"
perf report -i "$out/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep '%' | head -"$top"
echo "# perf.data in $out (perf report -i $out/perf.data)"
