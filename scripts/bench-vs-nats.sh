#!/usr/bin/env bash
# Meridian beside NATS JetStream on this machine, in one run: the same publish workloads
# (128 B and 1 KiB bodies, 1 and 64 in flight) against a Meridian cell over its RocketMQ gRPC
# front (`meridian bench grpc`, async and sync durability) and against one nats-server with
# JetStream file storage (the peer script in ../shared/bench/), then a table of Meridian/NATS
# ratios. NATS acknowledges before fsync by default, so the ratio compares it with Meridian's
# `async` mode; Meridian's `sync` (fsync before the acknowledgement) is printed beside it.
#
# Usage: scripts/bench-vs-nats.sh            (from the repository root)
# Env:   DURATION=5      measured seconds per case (both systems)
#        PEER_DIR=...    the peer scripts (default ../shared/bench next to the checkout)
#        NATS_PYPI=2.15.1  nats-server release to use (see the peer script; empty = Debian's)
#        OUT=/tmp/meridian-vs-nats   where the raw results go
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
. scripts/env.sh
DURATION="${DURATION:-5}"
PEER_DIR="${PEER_DIR:-$ROOT/../shared/bench}"
export NATS_PYPI="${NATS_PYPI-2.15.1}"
OUT="${OUT:-/tmp/meridian-vs-nats}"
mkdir -p "$OUT"
[ -x "$PEER_DIR/nats_peer.sh" ] || { echo "PEER_DIR=$PEER_DIR has no nats_peer.sh" >&2; exit 2; }

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --quiet --profile perf -p meridian
MERIDIAN="$CARGO_TARGET_DIR/perf/meridian"
BENCH_DIR="$(mktemp -d /tmp/meridian-vs-nats-data.XXXXXX)"
trap 'rm -rf "$BENCH_DIR"' EXIT
for size in 128 1024; do
  echo "# meridian: ${size} B bodies"
  "$MERIDIAN" bench grpc --dir "$BENCH_DIR" --seconds "$DURATION" --body-bytes "$size" \
    --senders 1,64 --modes async,sync --paths grpc --json > "$OUT/meridian-$size.json"
done

echo "# nats: ${NATS_PYPI:-debian} nats-server"
# The peer script builds its client with cargo; keep that out of Meridian's target dir.
CARGO_TARGET_DIR=/tmp/peerbench-target RUSTC_WRAPPER= DURATION="$DURATION" REPS=1 \
  CASES="sync-128 sync-1k async64-128 async64-1k" RESULTS="$OUT/nats.jsonl" \
  "$PEER_DIR/nats_peer.sh" | tee "$OUT/nats.txt"

python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
meridian = {}
for size in (128, 1024):
    for case in json.load(open(os.path.join(out, f"meridian-{size}.json")))["cases"]:
        meridian[(case["mode"], size, case["senders"])] = case
nats = {}
for line in open(os.path.join(out, "nats.jsonl")):
    if line.strip():
        r = json.loads(line)
        nats[(r["size"], {"sync-128": 1, "sync-1k": 1}.get(r["case"], 64))] = r
print()
print("| body | in flight | NATS msg/s | NATS p99 µs | Meridian async msg/s | p99 µs | ratio msg/s | ratio p99 | Meridian sync msg/s | p99 µs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for size in (128, 1024):
    for inflight in (1, 64):
        n = nats.get((size, inflight))
        a = meridian.get(("async", size, inflight))
        s = meridian.get(("sync", size, inflight))
        if not (n and a and s):
            print(f"| {size} B | {inflight} | missing figures |")
            continue
        print(f"| {size} B | {inflight} | {n['msgs_per_s']:,.0f} | {n['lat_us']['p99']:,.0f} "
              f"| {a['sends_per_s']:,.0f} | {a['p99_us']:,.0f} "
              f"| {a['sends_per_s'] / n['msgs_per_s']:.2f} | {a['p99_us'] / max(n['lat_us']['p99'], 1):.2f} "
              f"| {s['sends_per_s']:,.0f} | {s['p99_us']:,.0f} |")
print()
print("ratio msg/s > 1: Meridian (async) ahead on throughput; ratio p99 < 1: Meridian ahead on p99 latency.")
EOF
