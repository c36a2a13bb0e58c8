#!/bin/sh
# replay_must_refuse.sh: passes when a replay driver refuses its arguments
# (exit status 1 and a "replay: ..." reason), as for a missing or empty
# corpus; a crash, a sanitizer report or a success fails.
#   replay_must_refuse.sh REPLAY_BINARY ARG...
replay=$1
shift
out=$("$replay" "$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 1 ]; then
    echo "replay_must_refuse: expected exit status 1, got $rc"
    exit 1
fi
case "$out" in
    *"replay: "*"no inputs"* | *"replay: "*"No such file or directory"*) ;;
    *)
        echo "replay_must_refuse: no refusal message"
        exit 1
        ;;
esac
echo "replay_must_refuse: refused as expected"
