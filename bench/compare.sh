#!/usr/bin/env bash
# compare.sh: raftkv, etcd and single-node Redis through the same workloads,
# back to back, on this machine, and the ratios against the targets of
# docs/performance.md ("The full table").
#
#   bench/compare.sh [--duration 10s] [--runs N] [--only NAME[,NAME...]]
#                    [--raftkv-only] [--no-etcd] [--no-redis]
#
# Without --only every workload runs: the full table is
#   bench/compare.sh --runs 3
# Workloads (NAME): put1, put64, get64, put256, range64 (a linearizable
# range over a random window of 100 consecutive keys, the key space filled
# first), txn64 (If(Version(A) >= 0) Then(Put(A), Put(B)), two random keys),
# watch1000 (1,000 watchers on one prefix, 4 writers: events delivered per
# second and put-to-delivery latency), lease64 (grant a 10 s lease, then put
# a random key with it: one op), keepalive64 (renew one of 1,000 leases
# granted first), puttls64 (put64 over TLS with auth on: raftkv's clients
# use the cluster's CA and log in as root with a password; etcd's have
# client certificates too, and log in as root).
# Each runs on a fresh 3-node raftkv cluster (scripts/cluster.sh, fsync on,
# node i on 127.0.0.i:$RAFTKV_PORT, default 27001) driven by kvbench, then
# on a fresh 3-member etcd 3.4 cluster driven by etcdload
# (../shared/anchors/etcd-anchor.sh, or $ETCD_ANCHOR), with the same knobs:
# 16-byte keys over 10,000, 256-byte values, closed loop. put64 and get64
# also run against one Redis with an fsync per write (appendfsync always)
# through ../shared/anchors/redis-bench.sh (or $REDIS_ANCHOR): its knobs
# are fixed (64 clients, 200,000 SETs then 200,000 GETs of 256-byte values,
# one key), so only those two rows have a Redis figure, and --duration does
# not apply to it. With --runs N each workload runs N times on each system,
# alternating, and the medians are compared.
# --no-etcd / --no-redis leave one peer out; --raftkv-only leaves both out.
# Needs root the first time (apt-get installs etcd, Go and Redis for the
# anchors).
# Without the reference kit (no ../shared/anchors and no $ETCD_ANCHOR),
# --raftkv-only runs the raftkv half alone: its result lines and a table
# of raftkv's figures, no ratios; to compare, point ETCD_ANCHOR and
# REDIS_ANCHOR at copies of etcd-anchor.sh and redis-bench.sh
# (docs/performance.md says what they do).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
duration=10s runs=1 only="" etcd_on=true redis_on=true
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=${2:?--duration needs a value like 10s}; shift ;;
        --runs) runs=${2:?--runs needs a number}; shift ;;
        --only) only=${2:?--only needs a workload name}; shift ;;
        --raftkv-only) etcd_on=false redis_on=false ;;
        --no-etcd) etcd_on=false ;;
        --no-redis) redis_on=false ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$runs" in ''|*[!0-9]*|0) echo "compare.sh: --runs wants a number >= 1" >&2; exit 2 ;; esac
names="put1 put64 get64 put256 range64 txn64 watch1000 lease64 keepalive64 puttls64"
for n in ${only//,/ }; do
    case " $names " in *" $n "*) ;;
        *) echo "compare.sh: --only wants names from: ${names// /, } (comma-separated)" >&2
           exit 2 ;;
    esac
done

wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
# Redis has figures for put64 and get64 alone (see above).
wanted put64 || wanted get64 || redis_on=false

anchor=${ETCD_ANCHOR:-$root/../shared/anchors/etcd-anchor.sh}
redis_anchor=${REDIS_ANCHOR:-$root/../shared/anchors/redis-bench.sh}
if [ $etcd_on = true ] && [ ! -f "$anchor" ]; then
    cat >&2 <<END
compare.sh: no etcd reference at $anchor.
It runs etcd 3.4 and its load generator (etcdload) with kvbench's knobs
(../shared/anchors/etcd-anchor.sh in the reference kit). Either
  - set ETCD_ANCHOR=/path/to/etcd-anchor.sh, or
  - run bench/compare.sh --no-etcd (or --raftkv-only for raftkv's figures
    alone, no ratios), or build/bench/kvbench against any cluster
    (docs/performance.md, "For one system alone").
END
    exit 1
fi
if [ $redis_on = true ] && [ ! -f "$redis_anchor" ]; then
    cat >&2 <<END
compare.sh: no Redis reference at $redis_anchor.
It runs one Redis with appendfsync always and redis-benchmark
(../shared/anchors/redis-bench.sh in the reference kit). Either set
REDIS_ANCHOR=/path/to/redis-bench.sh, or run bench/compare.sh --no-redis.
END
    exit 1
fi
bdir=${RAFTKV_BUILD_DIR:-$root/build}
export RAFTKV_BUILD_DIR=$bdir
export RAFTKV_PORT=${RAFTKV_PORT:-27001}
if [ ! -x "$bdir/bench/kvbench" ] || [ ! -x "$bdir/kvserver/kvserver" ] ||
   [ ! -x "$bdir/clerk/kvctl" ]; then
    scripts/deps.sh --build
    cmake -S "$root" -B "$bdir" >/dev/null
    cmake --build "$bdir" -j "$(nproc)" --target kvserver kvctl kvbench >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-compare-XXXXXX")
export RAFTKV_CLUSTER_DIR=$work/cluster
cleanup() { scripts/cluster.sh wipe >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# name op clients conns security (plain, or tlsauth: TLS and auth on)
workloads=("put1 put 1 1 plain" "put64 put 64 64 plain" "get64 get 64 64 plain"
           "put256 put 256 16 plain" "range64 range 64 64 plain"
           "txn64 txn 64 64 plain" "watch1000 watch 4 4 plain"
           "lease64 lease 64 64 plain" "keepalive64 keepalive 64 64 plain"
           "puttls64 put 64 64 tlsauth")

field() { # line name -> the number after name=
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<" $1"
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Turn auth on in the running cluster: a user root with the role root and
# a random password (printed), as etcd-anchor.sh --auth does for etcd.
# kvbench logs in at node 1, which answers from the state it has applied
# (a follower that has not applied auth enable yet says "auth is not
# enabled"): wait until node 1 reports auth on.
enable_auth() { # endpoints cacert
    local pw t k=("$bdir/clerk/kvctl" --cacert "$2" --timeout 10)
    pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    "${k[@]}" --cluster "$1" user add "root:$pw" >/dev/null || return 1
    "${k[@]}" --cluster "$1" user grant-role root root >/dev/null || return 1
    "${k[@]}" --cluster "$1" auth enable >/dev/null || return 1
    for ((t = 0; t < 50; t++)); do
        if "${k[@]}" --cluster "127.0.0.1:$RAFTKV_PORT" auth status 2>/dev/null |
            grep -q 'Status: true'; then
            echo "$pw"
            return 0
        fi
        sleep 0.1
    done
    echo "compare.sh: node 1 does not report auth enabled 5 s after auth enable" >&2
    return 1
}

run_raftkv() { # op clients conns security: kvbench's result line
    local eps=127.0.0.1:$RAFTKV_PORT,127.0.0.2:$RAFTKV_PORT,127.0.0.3:$RAFTKV_PORT
    local pre=() sec=()
    if [ "$4" = tlsauth ]; then
        scripts/cluster.sh start 3 --tls >/dev/null || return 1
        local ca=$RAFTKV_CLUSTER_DIR/certs/ca.crt pw
        pw=$(enable_auth "$eps" "$ca") || return 1
        sec=(--cacert "$ca" --user "root:$pw")
    else
        scripts/cluster.sh start 3 >/dev/null || return 1
    fi
    [ "$1" = get ] && pre=(--prefill)
    [ "$1" = range ] && pre=(--range-keys 100) # fills the key space itself
    [ "$1" = watch ] && pre=(--watchers 1000)
    [ "$1" = lease ] && pre=(--lease-ttl 10)
    [ "$1" = keepalive ] && pre=(--leases 1000)
    "$bdir/bench/kvbench" --cluster "$eps" --op "$1" --clients "$2" --conns "$3" \
        --duration "$duration" --key-size 16 --val-size 256 --key-space 10000 \
        "${pre[@]}" "${sec[@]}" | grep '^op=' || return 1
    scripts/cluster.sh wipe >/dev/null
}

run_etcd() { # op clients conns security
    local pre=() sec=()
    [ "$4" = tlsauth ] && sec=(--tls --auth)
    [ "$1" = get ] && pre=(-prefill)
    [ "$1" = range ] && pre=(-range-keys 100) # etcdload fills the key space
    [ "$1" = watch ] && pre=(-watchers 1000)
    [ "$1" = lease ] && pre=(-lease-ttl 10)
    [ "$1" = keepalive ] && pre=(-leases 1000)
    ANCHOR_DIR=$work/etcd bash "$anchor" "${sec[@]}" -op "$1" -clients "$2" -conns "$3" \
        -duration "$duration" -key-size 16 -val-size 256 -key-space 10000 \
        "${pre[@]}" | grep '^op='
}

# One run of redis-bench.sh: 200,000 SETs then 200,000 GETs, 64 clients;
# prints a line per test in kvbench's fields (op=set|get ... rate= p50= p99=),
# from redis-benchmark's CSV ("test","rps","avg_latency_ms",
# "min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...).
run_redis() {
    # The anchor's port is fixed: a Redis already there would be measured.
    if (exec 3<>/dev/tcp/127.0.0.1/46379) 2>/dev/null; then
        echo "compare.sh: 127.0.0.1:46379, redis-bench.sh's port, is in use (another Redis anchor running?); try again later or use --no-redis" >&2
        return 1
    fi
    # Its Redis fails to start when the port is taken meanwhile (46379 is
    # in the kernel's range for outgoing connections, and the clusters
    # make many), and redis-benchmark then retries forever: bounded, and
    # tried again.
    local try out
    for try in 1 2 3; do
        out=$(timeout 120 bash "$redis_anchor" always 2>/dev/null |
            tr -d '"\r' | awk -F, '
            $1 == "SET" || $1 == "GET" {
                printf "op=%s clients=64 requests=200000 rate=%.0f ops/s mean=%sms p50=%sms p95=%sms p99=%sms max=%sms\n",
                    tolower($1), $2, $3, $5, $6, $7, $8 }') || true
        if [ -n "$out" ]; then
            echo "$out"
            return 0
        fi
        echo "compare.sh: redis-bench.sh gave no figures (try $try of 3)" >&2
        sleep 2
    done
    return 1
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; duration $duration; $runs run(s) each"
declare -A R
fail() { echo "compare.sh: $1 failed (see above); stopping" >&2; exit 1; }
record() { # name system line
    R[$1.$2.rate]+="$(field "$3" rate) "
    R[$1.$2.p50]+="$(field "$3" p50) "
    R[$1.$2.p99]+="$(field "$3" p99) "
}
for w in "${workloads[@]}"; do
    read -r name op clients conns sec <<<"$w"
    wanted "$name" || continue
    for ((i = 1; i <= runs; i++)); do
        line=$(run_raftkv "$op" "$clients" "$conns" "$sec") || fail "raftkv $name"
        echo "raftkv $name: $line"
        record "$name" raftkv "$line"
        if [ $etcd_on = true ]; then
            line=$(run_etcd "$op" "$clients" "$conns" "$sec") || fail "etcd $name"
            echo "etcd   $name: $line"
            record "$name" etcd "$line"
        fi
        # Redis: SET for put64, GET for get64; one anchor run gives both, so
        # put64's run serves get64 too when both are wanted.
        if [ $redis_on = true ] && { [ "$name" = put64 ] ||
           { [ "$name" = get64 ] && ! wanted put64; }; }; then
            lines=$(run_redis) || fail "Redis $name"
            sline=$(grep '^op=set ' <<<"$lines") || sline=""
            gline=$(grep '^op=get ' <<<"$lines") || gline=""
            [ -n "$sline$gline" ] || fail "Redis $name (redis-bench.sh printed no SET or GET row)"
            if wanted put64; then echo "redis  put64: $sline"; record put64 redis "$sline"; fi
            if wanted get64; then echo "redis  get64: $gline"; record get64 redis "$gline"; fi
        fi
    done
done

med() { tr ' ' '\n' <<<"${R[$1]:-}" | { grep . || true; } | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN {
    ok = (x != "n/a") && ((op == ">=") ? (x + 0 >= t) : (x + 0 <= t)); print ok ? "met" : "not met" }'; }

# The table: raftkv's columns, then etcd's and Redis's when they ran.
# Rates in ops/s (watch1000: events delivered/s); latencies in ms.
hdr="| workload | raftkv rate |" sep="|---|---|"
[ $etcd_on = true ] && hdr+=" etcd rate | raftkv/etcd |" sep+="---|---|"
[ $redis_on = true ] && hdr+=" Redis rate | raftkv/Redis |" sep+="---|---|"
hdr+=" raftkv p50 / p99 ms |" sep+="---|"
[ $etcd_on = true ] && hdr+=" etcd p50 / p99 ms |" sep+="---|"
[ $redis_on = true ] && hdr+=" Redis p50 / p99 ms |" sep+="---|"
if [ $etcd_on = true ] || [ $redis_on = true ]; then hdr+=" target | verdict |" sep+="---|---|"; fi
echo
echo "$hdr"
echo "$sep"
for w in "${workloads[@]}"; do
    read -r name op clients conns sec <<<"$w"
    [ -n "${R[$name.raftkv.rate]:-}" ] || continue
    rr=$(med "$name.raftkv.rate") r50=$(med "$name.raftkv.p50") r99=$(med "$name.raftkv.p99")
    case $op in
        get) what="linearizable get" ;;
        range) what="linearizable range of 100 keys" ;;
        txn) what="txn (compare + 2 puts)" ;;
        watch) what="watch: 1,000 watchers, events delivered" ;;
        lease) what="lease grant + put with it" ;;
        keepalive) what="lease keep-alive (1,000 leases)" ;;
        *) what=$op ;;
    esac
    [ "$sec" = tlsauth ] && what+=" over TLS, auth on"
    row="| $what, $clients clients / $conns conns | $rr |"
    lat=" ${r50:--} / ${r99:--} |"
    targets=() verdicts=()
    if [ $etcd_on = true ]; then
        er=$(med "$name.etcd.rate") e50=$(med "$name.etcd.p50") e99=$(med "$name.etcd.p99")
        q=$(ratio "$rr" "$er")
        row+=" ${er:--} | ${q}x |"
        lat+=" ${e50:--} / ${e99:--} |"
        t="" v=""
        case $name in
            put1) t="p50 <= 0.5x etcd's"; v=$(verdict "$(ratio "$r50" "$e50")" "<=" 0.5) ;;
            put64) # issue 18: 8x the rate, a p99 within 3x its own p50
                   # and within a fifth of etcd's
                   t=">= 8x etcd's rate, p99 <= 3x own p50 and <= etcd's p99 / 5"
                   v=$(verdict "$q" ">=" 8)
                   [ "$v" = met ] && v=$(verdict "$(ratio "$r99" "$r50")" "<=" 3)
                   [ "$v" = met ] && v=$(verdict "$(ratio "$r99" "$e99")" "<=" 0.2) ;;
            get64) t=">= 5x etcd's rate"; v=$(verdict "$q" ">=" 5) ;;
            put256) t=">= 4x etcd's rate"; v=$(verdict "$q" ">=" 4) ;;
            range64) t=">= 5x etcd's rate"; v=$(verdict "$q" ">=" 5) ;;
            txn64) t=">= 5x etcd's rate"; v=$(verdict "$q" ">=" 5) ;;
            watch1000) t=">= 5x etcd's events/s, p99 < etcd's"
                   v=$(verdict "$q" ">=" 5); [ "$v" = met ] && v=$(verdict "$(ratio "$r99" "$e99")" "<=" 1) ;;
            lease64) t=">= 5x etcd's rate"; v=$(verdict "$q" ">=" 5) ;;
        esac
        [ -z "$t" ] || { targets+=("$t"); verdicts+=("$v (etcd)"); }
    fi
    if [ $redis_on = true ]; then
        xr=$(med "$name.redis.rate") x50=$(med "$name.redis.p50") x99=$(med "$name.redis.p99")
        if [ -n "$xr" ]; then
            q=$(ratio "$rr" "$xr")
            row+=" $xr | ${q}x |"
            lat+=" ${x50:--} / ${x99:--} |"
            if [ "$name" = put64 ]; then
                targets+=(">= 0.6x Redis SET's rate")
                verdicts+=("$(verdict "$q" ">=" 0.6) (Redis)")
            fi
        else
            row+=" - | - |"
            lat+=" - |"
        fi
    fi
    row+=$lat
    if [ $etcd_on = true ] || [ $redis_on = true ]; then
        if [ ${#targets[@]} = 0 ]; then
            row+=" (none) | - |"
        else
            t=$(printf '%s; ' "${targets[@]}") v=$(printf '%s; ' "${verdicts[@]}")
            row+=" ${t%; } | ${v%; } |"
        fi
    fi
    echo "$row"
done
