#!/bin/sh
# Runs a client command next to its own local llmnode node, then stops the node.
#
# An llmnode application talks to the node on its own machine (the control socket in the data
# dir), so the compose `client` service starts one here, joined to the mesh through the usual
# environment (LLMNODE_JOIN, LLMNODE_MESH_KEY, ...), waits until it answers and sees
# LLMNODE_WAIT_PEERS other alive peers (default 3), runs "$@", and exits with its status.
set -eu

wait_seconds="${LLMNODE_WAIT_SECONDS:-120}"
wanted_peers="${LLMNODE_WAIT_PEERS:-3}"

llmnode start &
node_pid=$!
stop_node() {
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
}
trap stop_node EXIT INT TERM

elapsed=0
until llmnode status >/dev/null 2>&1; do
    if ! kill -0 "$node_pid" 2>/dev/null; then
        echo "client.sh: the local llmnode node exited" >&2
        exit 1
    fi
    if [ "$elapsed" -ge "$wait_seconds" ]; then
        echo "client.sh: the local llmnode node did not answer within ${wait_seconds}s" >&2
        exit 1
    fi
    sleep 1
    elapsed=$((elapsed + 1))
done

until [ "$(llmnode peers --json 2>/dev/null | python -c '
import json, os, sys
me = os.environ.get("LLMNODE_NAME", "")
try:
    peers = json.load(sys.stdin)
except ValueError:
    peers = []
print(sum(1 for peer in peers if peer.get("state") == "alive" and peer.get("name") != me))
')" -ge "$wanted_peers" ]; do
    if [ "$elapsed" -ge "$wait_seconds" ]; then
        echo "client.sh: fewer than ${wanted_peers} alive peers after ${wait_seconds}s" >&2
        exit 1
    fi
    sleep 1
    elapsed=$((elapsed + 1))
done

status=0
"$@" || status=$?
exit "$status"
