#!/usr/bin/env bash
# bigstate.sh: a state of SIZE_GB GiB of 256-byte values on a 3-node
# cluster whose nodes are each held to MEM of memory by a cgroup
# (docs/performance.md, "Big states"). Not part of the test suite.
#
#   bench/bigstate.sh SIZE_GB [WORKDIR]
#
# Environment: BUILD (build directory, default build), KVSERVER_RUN (the
# kvserver the nodes run, default BUILD's: to compare versions), MEM (the memory
# limit of each node, default 2G), PORT (first of 6 ports, default 29001),
# WRITE_S (seconds of kvbench puts during the snapshot transfer: the
# transfer's length, at least 10), KEEP=1 (keep WORKDIR).
#
# It measures and prints: the backup's generation, --restore into three
# data directories, a cold start of the cluster (process start to a
# linearizable get answered), a restart of one node, the transfer of a
# snapshot to a wiped follower while a writer runs (MB/s), each node's
# peak RSS and its cgroup's peak usage, and checks that the follower ends
# at the leader's applied index and serves sampled keys right.
set -euo pipefail

SIZE_GB=${1:?usage: bench/bigstate.sh SIZE_GB [WORKDIR]}
WORK=${2:-/tmp/bigstate-$$}
BUILD=${BUILD:-build}
MEM=${MEM:-2G}
PORT=${PORT:-29001}
WRITE_S=${WRITE_S:-0}
VAL=256
KEYS=$(awk -v g="$SIZE_GB" -v v=$VAL 'BEGIN { printf "%d", g * 1073741824 / v }')
KVSERVER=$BUILD/kvserver/kvserver
KVSERVER_RUN=${KVSERVER_RUN:-$KVSERVER} # the nodes' binary (restores use KVSERVER)
KVCTL=$BUILD/clerk/kvctl
KVBENCH=$BUILD/bench/kvbench
GEN=$BUILD/bench/bigstate_gen
for b in "$KVSERVER" "$KVCTL" "$KVBENCH" "$GEN"; do
    [ -x "$b" ] || { echo "bigstate: $b missing (build first)" >&2; exit 2; }
done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "bigstate: $*"; }

# Disk: the backup and three states (each about 1.25 times the values);
# the wiped follower's build comes after the backup is deleted. 10% spare.
need_gb=$(awk -v g="$SIZE_GB" 'BEGIN { printf "%d", g * 1.25 * 4 * 1.1 + 2 }')
mkdir -p "$WORK"
free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "bigstate: $WORK has ${free_gb}G free, about ${need_gb}G needed" >&2
    exit 2
fi

# A memory cgroup (v1) per node, under this shell's own, when allowed.
CG_PARENT=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
CG_OK=0
CGS=()
for i in 1 2 3; do
    cg="$CG_PARENT/bigstate-$$-$i"
    if mkdir "$cg" 2>/dev/null && echo "$MEM" >"$cg/memory.limit_in_bytes" 2>/dev/null; then
        CGS[$i]=$cg
        CG_OK=1
    else
        rmdir "$cg" 2>/dev/null || true
        CG_OK=0
        break
    fi
done
if [ "$CG_OK" = 1 ]; then
    log "memory limit: cgroup v1 $CG_PARENT/bigstate-$$-{1,2,3}, memory.limit_in_bytes=$(cat "${CGS[1]}/memory.limit_in_bytes") each (RSS and page cache)"
else
    log "memory limit: NONE (cannot make a child memory cgroup under $CG_PARENT)"
fi

PIDS=()
WRITER=
cleanup() {
    [ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null || true
    for i in 1 2 3; do
        if [ -n "${PIDS[$i]:-}" ]; then
            kill "${PIDS[$i]}" 2>/dev/null || true
            wait "${PIDS[$i]}" 2>/dev/null || true
        fi
    done
    for i in 1 2 3; do
        [ -n "${CGS[$i]:-}" ] && rmdir "${CGS[$i]}" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

CLUSTER="1=127.0.0.1:$PORT,2=127.0.0.1:$((PORT + 2)),3=127.0.0.1:$((PORT + 4))"
PEERS="1=127.0.0.1:$((PORT + 1)),2=127.0.0.1:$((PORT + 3)),3=127.0.0.1:$((PORT + 5))"
ENDPOINTS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 4))"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/peer.secret"
chmod 600 "$WORK/peer.secret"

start_node() { # i
    local i=$1
    (
        if [ -n "${CGS[$i]:-}" ]; then echo $BASHPID >"${CGS[$i]}/cgroup.procs"; fi
        exec "$KVSERVER_RUN" --id "$i" --cluster "$CLUSTER" --peers "$PEERS" \
            --peer-secret-file "$WORK/peer.secret" --data-dir "$WORK/n$i" \
            --quota-bytes 0 >>"$WORK/n$i.log" 2>&1
    ) &
    PIDS[$i]=$!
}

stop_node() { # i
    local i=$1
    if [ -n "${PIDS[$i]:-}" ]; then
        kill "${PIDS[$i]}"
        wait "${PIDS[$i]}" || true
        PIDS[$i]=
    fi
}

peak() { # i: the node's VmHWM (MiB) and RssAnon now
    local i=$1
    awk '/VmHWM|RssAnon/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/${PIDS[$i]}/status"
}

cg_peak() { # i
    local i=$1
    if [ -n "${CGS[$i]:-}" ]; then
        awk '{ printf "cgroup peak %d MiB", $1 / 1048576 }' "${CGS[$i]}/memory.max_usage_in_bytes"
    fi
}

cg_reset() {
    for i in 1 2 3; do
        [ -n "${CGS[$i]:-}" ] && echo 0 >"${CGS[$i]}/memory.max_usage_in_bytes" 2>/dev/null || true
    done
}

wait_get() { # endpoint list, key, timeout s: until a linearizable get answers
    local eps=$1 key=$2 end=$(($(date +%s) + $3))
    until RAFTKV_CLUSTER=$eps "$KVCTL" --timeout 2 get "$key" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.05
    done
}

wait_node() { # i, key, timeout s: until node i itself answers (a stale
    # get from its own state) and a linearizable get through it answers
    local i=$1 key=$2 end=$(($(date +%s) + $3)) ep=127.0.0.1:$((PORT + 2 * ($1 - 1)))
    until RAFTKV_CLUSTER=$ep "$KVCTL" --timeout 2 --stale get "$key" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.05
    done
    wait_get "$ep" "$key" "$3"
}

value_of() { # i: the generator's value of key i
    printf "%012d" "$1" | awk -v n=$VAL '{ s = ""; while (length(s) < n) s = s $0; print substr(s, 1, n) }'
}

log "$(date -u +%FT%TZ) size ${SIZE_GB} GiB: $KEYS keys of $VAL-byte values, in $WORK"

# 1. The backup.
t=$(now)
"$GEN" "$WORK/state.snap" "$KEYS" $VAL
SNAP_BYTES=$(stat -c %s "$WORK/state.snap")
log "generated backup: $SNAP_BYTES bytes in $(since "$t") s"

# 2. --restore into three data directories, one after the other, each
# under its node's cgroup.
for i in 1 2 3; do
    t=$(now)
    (
        if [ -n "${CGS[$i]:-}" ]; then echo $BASHPID >"${CGS[$i]}/cgroup.procs"; fi
        exec "$KVSERVER" --id "$i" --cluster "$CLUSTER" --peers "$PEERS" \
            --data-dir "$WORK/n$i" --restore "$WORK/state.snap" >"$WORK/restore$i.log" 2>&1
    )
    secs=$(since "$t")
    log "restore node $i: $secs s ($(awk -v b="$SNAP_BYTES" -v s="$secs" 'BEGIN { printf "%.0f", b / s / 1e6 }') MB/s), data.mdb $(($(stat -c %s "$WORK/n$i/data.mdb") >> 20)) MiB, $(cg_peak "$i")"
done
rm -f "$WORK/state.snap"
cg_reset

# 3. Cold start of the cluster: all three at once, until a linearizable
# get is answered.
SAMPLE=$((KEYS / 2))
KEY=$(printf "k%012d" "$SAMPLE")
t=$(now)
for i in 1 2 3; do start_node "$i"; done
wait_get "$ENDPOINTS" "$KEY" 120 || { log "no answer after a cold start"; exit 1; }
log "cold start (3 nodes, process start to a linearizable get): $(since "$t") s"

# 4. Restart of one node (the leader): stopped with SIGTERM, started, until
# a linearizable get through it is answered.
leader=$(RAFTKV_CLUSTER=$ENDPOINTS "$KVCTL" status | awk '/role=leader/ { sub("id=", "", $1); print $1 }')
stop_node "$leader"
t=$(now)
start_node "$leader"
wait_node "$leader" "$KEY" 120 || { log "no answer after a restart"; exit 1; }
log "restart of node $leader (process start to a stale get from its own state, then a linearizable get through it): $(since "$t") s"

# 5. A wiped follower catches up from a snapshot while a writer runs.
leader=$(RAFTKV_CLUSTER=$ENDPOINTS "$KVCTL" status | awk '/role=leader/ { sub("id=", "", $1); print $1 }')
f=$((leader % 3 + 1))
stop_node "$f"
rm -rf "$WORK/n$f"
cg_reset
secs_w=$((WRITE_S > 10 ? WRITE_S : 10))
"$KVBENCH" --cluster "$ENDPOINTS" --op put --clients 4 --duration 3600s \
    --key-size 16 --val-size $VAL --key-space 100000 >"$WORK/writer.log" 2>&1 &
WRITER=$!
sleep 2
applied_of() { # id: its applied index, from kvctl status
    RAFTKV_CLUSTER=$ENDPOINTS "$KVCTL" status | awk -v id="id=$1" '$1 == id { for (k = 1; k <= NF; k++) if ($k ~ /^applied=/) { sub("applied=", "", $k); print $k } }'
}
a0=$(applied_of "$leader")
t=$(now)
start_node "$f"
end=$(($(date +%s) + 7200))
until grep -q "installed a snapshot of the state" "$WORK/n$f.log"; do
    [ "$(date +%s)" -lt "$end" ] || { log "no snapshot installed"; exit 1; }
    kill -0 "${PIDS[$f]}" 2>/dev/null || { log "node $f exited: $(tail -3 "$WORK/n$f.log")"; exit 1; }
    sleep 0.5
done
secs=$(since "$t")
a1=$(applied_of "$leader")
line=$(grep "installed a snapshot of the state" "$WORK/n$f.log" | tail -1)
bytes=$(echo "$line" | sed -n 's/.*: \([0-9]*\) bytes received.*/\1/p')
bytes=${bytes:-$SNAP_BYTES} # (a kvserver that does not log them: about the backup's size)
log "snapshot to wiped node $f: $bytes bytes, $secs s from its start to installed: $(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f", b / s / 1e6 }') MB/s, writer running"
log "  node $f says: ${line#*: installed }"
sleep "$((secs_w > 10 ? 5 : 2))"
kill "$WRITER"
wait "$WRITER" 2>/dev/null || true
WRITER=
log "writer: $((a1 - a0)) entries committed by the leader during the transfer ($(awk -v n=$((a1 - a0)) -v s="$secs" 'BEGIN { printf "%.0f", n / s }')/s); streams the leader started: $(grep -c "sending a snapshot" "$WORK/n$leader.log") (logged at most every 10 s)"

# 6. The follower reaches the leader's applied index and serves the keys.
end=$(($(date +%s) + 120))
while :; do
    st=$(RAFTKV_CLUSTER=$ENDPOINTS "$KVCTL" status)
    la=$(echo "$st" | awk -v id="id=$leader" '$1 == id { for (k = 1; k <= NF; k++) if ($k ~ /^applied=/) { sub("applied=", "", $k); print $k } }')
    fa=$(echo "$st" | awk -v id="id=$f" '$1 == id { for (k = 1; k <= NF; k++) if ($k ~ /^applied=/) { sub("applied=", "", $k); print $k } }')
    [ -n "$la" ] && [ "$la" = "$fa" ] && break
    [ "$(date +%s)" -lt "$end" ] || { log "follower at $fa, leader at $la"; echo "$st"; exit 1; }
    sleep 0.5
done
log "node $f applied index $fa = leader's $la"
bad=0
for s in 0 1 $((KEYS / 3)) $SAMPLE $((KEYS - 1)) $((RANDOM * RANDOM % KEYS)) $((RANDOM * RANDOM % KEYS)); do
    k=$(printf "k%012d" "$s")
    got=$(RAFTKV_CLUSTER=127.0.0.1:$((PORT + 2 * (f - 1))) "$KVCTL" --stale get "$k" 2>&1 || true)
    if [ "$got" != "$(value_of "$s")" ]; then
        log "node $f: stale get $k: wrong value: ${got:0:40}..."
        bad=1
    fi
done
[ "$bad" = 0 ] && log "node $f: stale gets of 7 sampled keys: right values"

# 7. Peak memory, then a restart of the follower, now with the writer's
# log to replay.
for i in 1 2 3; do
    log "node $i: $(peak "$i") $(cg_peak "$i") (since the snapshot phase), data.mdb $(($(stat -c %s "$WORK/n$i/data.mdb") >> 20)) MiB"
done
stop_node "$f"
t=$(now)
start_node "$f"
wait_node "$f" "$KEY" 120 || { log "no answer after a restart"; exit 1; }
log "restart of node $f after the writes (process start to a stale get from its own state, then a linearizable get through it): $(since "$t") s; $(grep "restored term" "$WORK/n$f.log" | tail -1 | sed 's/.*restored/restored/')"
exit $bad
