#!/usr/bin/env bash
# A flame graph of the node during one bench scenario (docs/performance.md).
#
#   bench/scripts/flamegraph.sh <bin dir> <name> <delay secs> <record secs> -- <bench args>
#
# <bin dir> holds `meshrelay` and `meshrelay-bench` (a release build: the
# workspace's release profile keeps debug info). The bench starts the node;
# after <delay> seconds `perf` records the node process (400 Hz, DWARF call
# graphs) for <record> seconds; the stacks are folded and drawn with inferno
# (`cargo install inferno`) into <name>.svg in the current directory.
# PIN=1 runs the bench on CPU 1 and the node on CPU 0.
# Needs perf and kernel.perf_event_paranoid <= 1 (or root).
set -euo pipefail
bindir=$1 name=$2 delay=$3 secs=$4
shift 4
[ "${1:-}" = "--" ] && shift
pin=()
node_cpus=()
if [ "${PIN:-}" = 1 ]; then
  pin=(taskset -c 1)
  node_cpus=(--node-cpus 0)
fi
"${pin[@]}" "$bindir/meshrelay-bench" "${node_cpus[@]}" --node-bin "$bindir/meshrelay" "$@" \
  > "$name.bench.log" 2>&1 &
bench=$!
sleep "$delay"
node=$(pgrep -f "^$bindir/meshrelay serve" | head -1)
perf record -o "$name.perf.data" -F 400 --call-graph dwarf,32768 -p "$node" -- sleep "$secs" 2> "$name.perf.log"
wait "$bench"
perf script -i "$name.perf.data" 2>/dev/null | inferno-collapse-perf > "$name.folded"
inferno-flamegraph --minwidth 1.5 --title "meshrelay: $name" < "$name.folded" > "$name.svg"
grep -v WARN "$name.bench.log" | tail -1
