#!/usr/bin/env bash
# compare.sh: raftkv and etcd through the same workloads, back to back, on
# this machine, and the ratios against the targets of docs/performance.md.
#
#   bench/compare.sh [--duration 10s] [--runs N] [--only NAME[,NAME...]]
#                    [--raftkv-only]
#
# Workloads (NAME): put1, put64, get64, put256, range64 (a linearizable
# range over a random window of 100 consecutive keys, the key space filled
# first), txn64 (If(Version(A) >= 0) Then(Put(A), Put(B)), two random keys),
# watch1000 (1,000 watchers on one prefix, 4 writers: events delivered per
# second and put-to-delivery latency), lease64 (grant a 10 s lease, then put
# a random key with it: one op), keepalive64 (renew one of 1,000 leases
# granted first).
# Each runs on a fresh 3-node raftkv cluster (scripts/cluster.sh, fsync on,
# node i on 127.0.0.i:$RAFTKV_PORT, default 27001) driven by kvbench, then
# on a fresh 3-member etcd 3.4 cluster driven by etcdload
# (../shared/anchors/etcd-anchor.sh, or $ETCD_ANCHOR), with the same knobs:
# 16-byte keys over 10,000, 256-byte values, closed loop. With --runs N each
# pair runs N times, alternating, and the medians are compared.
# Needs root the first time (apt-get installs etcd and Go for the anchor).
# Without the reference kit (no ../shared/anchors and no $ETCD_ANCHOR),
# --raftkv-only runs the raftkv half alone: its result lines and a table
# of raftkv's figures, no ratios; to compare, point ETCD_ANCHOR at a copy
# of etcd-anchor.sh (docs/performance.md says what it does).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
duration=10s runs=1 only="" raftkv_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=${2:?--duration needs a value like 10s}; shift ;;
        --runs) runs=${2:?--runs needs a number}; shift ;;
        --only) only=${2:?--only needs a workload name}; shift ;;
        --raftkv-only) raftkv_only=true ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$runs" in ''|*[!0-9]*|0) echo "compare.sh: --runs wants a number >= 1" >&2; exit 2 ;; esac
names="put1 put64 get64 put256 range64 txn64 watch1000 lease64 keepalive64"
for n in ${only//,/ }; do
    case " $names " in *" $n "*) ;;
        *) echo "compare.sh: --only wants names from: ${names// /, } (comma-separated)" >&2
           exit 2 ;;
    esac
done

anchor=${ETCD_ANCHOR:-$root/../shared/anchors/etcd-anchor.sh}
if [ $raftkv_only = false ] && [ ! -f "$anchor" ]; then
    cat >&2 <<END
compare.sh: no etcd reference at $anchor.
It runs etcd 3.4 and its load generator (etcdload) with kvbench's knobs
(../shared/anchors/etcd-anchor.sh in the reference kit). Either
  - set ETCD_ANCHOR=/path/to/etcd-anchor.sh, or
  - run bench/compare.sh --raftkv-only for raftkv's figures alone
    (no ratios), or build/bench/kvbench against any cluster
    (docs/performance.md, "For one system alone").
END
    exit 1
fi
bdir=${RAFTKV_BUILD_DIR:-$root/build}
export RAFTKV_BUILD_DIR=$bdir
export RAFTKV_PORT=${RAFTKV_PORT:-27001}
if [ ! -x "$bdir/bench/kvbench" ] || [ ! -x "$bdir/kvserver/kvserver" ]; then
    scripts/deps.sh --build
    cmake -S "$root" -B "$bdir" >/dev/null
    cmake --build "$bdir" -j "$(nproc)" --target kvserver kvctl kvbench >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-compare-XXXXXX")
export RAFTKV_CLUSTER_DIR=$work/cluster
cleanup() { scripts/cluster.sh wipe >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# name op clients conns
workloads=("put1 put 1 1" "put64 put 64 64" "get64 get 64 64" "put256 put 256 16"
           "range64 range 64 64" "txn64 txn 64 64" "watch1000 watch 4 4"
           "lease64 lease 64 64" "keepalive64 keepalive 64 64")
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

field() { # line name -> the number after name=
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<" $1"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

run_raftkv() { # op clients conns
    scripts/cluster.sh start 3 >/dev/null
    local eps=127.0.0.1:$RAFTKV_PORT,127.0.0.2:$RAFTKV_PORT,127.0.0.3:$RAFTKV_PORT
    local pre=()
    [ "$1" = get ] && pre=(--prefill)
    [ "$1" = range ] && pre=(--range-keys 100) # fills the key space itself
    [ "$1" = watch ] && pre=(--watchers 1000)
    [ "$1" = lease ] && pre=(--lease-ttl 10)
    [ "$1" = keepalive ] && pre=(--leases 1000)
    "$bdir/bench/kvbench" --cluster "$eps" --op "$1" --clients "$2" --conns "$3" \
        --duration "$duration" --key-size 16 --val-size 256 --key-space 10000 \
        "${pre[@]}" | grep '^op='
    scripts/cluster.sh wipe >/dev/null
}

run_etcd() { # op clients conns
    local pre=()
    [ "$1" = get ] && pre=(-prefill)
    [ "$1" = range ] && pre=(-range-keys 100) # etcdload fills the key space
    [ "$1" = watch ] && pre=(-watchers 1000)
    [ "$1" = lease ] && pre=(-lease-ttl 10)
    [ "$1" = keepalive ] && pre=(-leases 1000)
    ANCHOR_DIR=$work/etcd bash "$anchor" -op "$1" -clients "$2" -conns "$3" \
        -duration "$duration" -key-size 16 -val-size 256 -key-space 10000 \
        "${pre[@]}" | grep '^op='
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; duration $duration; $runs run(s) each"
declare -A R
for w in "${workloads[@]}"; do
    read -r name op clients conns <<<"$w"
    wanted "$name" || continue
    for ((i = 1; i <= runs; i++)); do
        line=$(run_raftkv "$op" "$clients" "$conns")
        echo "raftkv $name: $line"
        R[$name.raftkv.rate]+="$(field "$line" rate) "
        R[$name.raftkv.p50]+="$(field "$line" p50) "
        R[$name.raftkv.p99]+="$(field "$line" p99) "
        [ $raftkv_only = true ] && continue
        line=$(run_etcd "$op" "$clients" "$conns")
        echo "etcd   $name: $line"
        R[$name.etcd.rate]+="$(field "$line" rate) "
        R[$name.etcd.p50]+="$(field "$line" p50) "
        R[$name.etcd.p99]+="$(field "$line" p99) "
    done
done

med() { tr ' ' '\n' <<<"${R[$1]}" | grep . | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN {
    ok = (op == ">=") ? (x + 0 >= t) : (x + 0 <= t); print ok ? "met" : "not met" }'; }

if [ $raftkv_only = true ]; then
    echo
    echo "| workload | raftkv rate | p50 / p99 ms |"
    echo "|---|---|---|"
    for w in "${workloads[@]}"; do
        read -r name op clients conns <<<"$w"
        [ -n "${R[$name.raftkv.rate]:-}" ] || continue
        echo "| $name ($op, $clients clients / $conns conns) | $(med "$name.raftkv.rate") | $(med "$name.raftkv.p50") / $(med "$name.raftkv.p99") |"
    done
    exit 0
fi
echo
echo "| workload | raftkv rate | etcd rate | rate ratio | raftkv p50 / p99 ms | etcd p50 / p99 ms | target | verdict |"
echo "|---|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
    read -r name op clients conns <<<"$w"
    [ -n "${R[$name.raftkv.rate]:-}" ] || continue
    rr=$(med "$name.raftkv.rate") er=$(med "$name.etcd.rate")
    r50=$(med "$name.raftkv.p50") e50=$(med "$name.etcd.p50")
    r99=$(med "$name.raftkv.p99") e99=$(med "$name.etcd.p99")
    q=$(ratio "$rr" "$er")
    case $name in
        put1) target="p50 <= 0.5x etcd's"; v=$(verdict "$(ratio "$r50" "$e50")" "<=" 0.5) ;;
        put64) target=">= 5x rate, p99 <= etcd's"
               v=$(verdict "$q" ">=" 5); [ "$v" = met ] && v=$(verdict "$(ratio "$r99" "$e99")" "<=" 1) ;;
        get64) target=">= 5x rate"; v=$(verdict "$q" ">=" 5) ;;
        put256) target=">= 4x rate"; v=$(verdict "$q" ">=" 4) ;;
        range64) target=">= 5x rate"; v=$(verdict "$q" ">=" 5) ;;
        txn64) target=">= 5x rate"; v=$(verdict "$q" ">=" 5) ;;
        watch1000) target=">= 5x events/s, p99 < etcd's"
               v=$(verdict "$q" ">=" 5); [ "$v" = met ] && v=$(verdict "$(ratio "$r99" "$e99")" "<=" 1) ;;
        lease64) target=">= 5x rate"; v=$(verdict "$q" ">=" 5) ;;
        keepalive64) target="(none)"; v="-" ;;
    esac
    case $op in
        get) what="linearizable get" ;;
        range) what="linearizable range of 100 keys" ;;
        txn) what="txn (compare + 2 puts)" ;;
        watch) what="watch: 1,000 watchers, events delivered" ;;
        lease) what="lease grant + put with it" ;;
        keepalive) what="lease keep-alive (1,000 leases)" ;;
        *) what=$op ;;
    esac
    echo "| $what, $clients clients / $conns conns | $rr | $er | ${q}x | $r50 / $r99 | $e50 / $e99 | $target | $v |"
done
