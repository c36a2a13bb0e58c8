#!/usr/bin/env bash
# stalls.sh: how long one big write holds the other clients of a 3-node
# cluster (docs/performance.md, "Stalls of big operations"). Not part of
# the test suite.
#
#   bench/stalls.sh lease N [KVSERVER FLAGS...]    revoke a lease of N keys
#   bench/stalls.sh compact N [KVSERVER FLAGS...]  compact N history events
#
# lease: one lease is given N keys (64-byte values, transactions of 128
# puts through the Python client), then revoked. compact: N puts to 1,000
# keys in transactions of 128 (N events of history, under the default
# --history-revisions), then `kvctl compact` to the last revision. Either
# runs while 4 kvbench clients put for DURATION s (it starts AT s in), and
# prints how long it took, kvbench's line (p99 and max: the writers'
# longest wait) and whether a node went to pre-vote or a new term began.
#
# Environment: BUILD (build directory, default build), PORT (client port
# of the nodes, 127.0.0.1-3, default 29101), DURATION (default 8), AT
# (default 3). The cluster lives in a directory under TMPDIR (default
# /tmp), wiped at the end.
set -euo pipefail

WHAT=${1:?usage: bench/stalls.sh lease|compact N [KVSERVER FLAGS...]}
N=${2:?usage: bench/stalls.sh lease|compact N [KVSERVER FLAGS...]}
shift 2
case $WHAT in lease | compact) ;; *)
    echo "stalls: lease or compact, not $WHAT" >&2
    exit 2
    ;;
esac
DURATION=${DURATION:-8}
AT=${AT:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${BUILD:-$ROOT/build}" && pwd)
KVCTL=$BUILD/clerk/kvctl
KVBENCH=$BUILD/bench/kvbench
LIB=$BUILD/clerk/libclerk.so.0
for b in "$BUILD/kvserver/kvserver" "$KVCTL" "$KVBENCH" "$LIB"; do
    [ -e "$b" ] || { echo "stalls: $b missing (build first)" >&2; exit 2; }
done

export RAFTKV_CLUSTER_DIR
RAFTKV_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-stalls-XXXXXX")
export RAFTKV_PORT=${PORT:-29101} RAFTKV_BUILD_DIR=$BUILD
export RAFTKV_SERVER_FLAGS="$*"
cleanup() { "$ROOT/scripts/cluster.sh" wipe > /dev/null 2>&1 || true; rm -rf "$RAFTKV_CLUSTER_DIR"; }
trap cleanup EXIT
"$ROOT/scripts/cluster.sh" start > /dev/null
eval "$("$ROOT/scripts/cluster.sh" env)"

# Load through the Python client (clients/python) on this build's libclerk.
LEASE=$(RAFTKV_LIBCLERK=$LIB PYTHONPATH=$ROOT/clients/python python3 - \
    "$RAFTKV_CLUSTER" "$N" "$WHAT" << 'EOF'
import sys, time, raftkv
servers, n, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with raftkv.Client(servers) as c:
    lease = c.lease_grant(3600).id if what == "lease" else 0
    t0 = time.time()
    for i in range(0, n, 128):
        t = c.txn()
        for j in range(i, min(i + 128, n)):
            key = "s/%08d" % j if what == "lease" else "s/%06d" % (j % 1000)
            t.then_put(key, "x" * 64, lease=lease)
        t.commit()
    print("stalls: wrote %d keys in %.1f s" % (n, time.time() - t0),
          file=sys.stderr)
    print("%x" % lease)
EOF
)
REV=$("$KVCTL" -w json get s/ --prefix --limit 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
terms() { "$KVCTL" -w json status | python3 -c 'import json, sys
d = json.load(sys.stdin)
rows = d if isinstance(d, list) else d.get("nodes", [d])
print(max(r.get("term", 0) for r in rows))'; }
T0=$(terms)
"$KVBENCH" --cluster "$RAFTKV_CLUSTER" --op put --clients 4 --duration "$DURATION" \
    > "$RAFTKV_CLUSTER_DIR/bench.out" 2>&1 &
B=$!
sleep "$AT"
start=$(date +%s.%N)
if [ "$WHAT" = lease ]; then
    "$KVCTL" --timeout 60 lease revoke "$LEASE"
else
    "$KVCTL" --timeout 60 compact "$REV"
fi
echo "stalls: $WHAT of $N took $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
wait $B
cat "$RAFTKV_CLUSTER_DIR/bench.out"
PRE=$(cat "$RAFTKV_CLUSTER_DIR"/*.log | grep -c "pre-candidate in term [1-9]" || true)
echo "stalls: term $T0 -> $(terms); $PRE pre-vote(s) after the first election"
