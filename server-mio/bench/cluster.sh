#!/usr/bin/env bash
# One node against an origin and an edge, same input, same load generator: what a second node
# on the second core delivers, and the latency the edge's hop adds. Not run by CI. Needs root
# (a private network namespace) and redis-server.
#
#   server-mio/bench/cluster.sh [VIEWERS...]      # default: 50 200
#
# one-node:    one server pinned to CPU 0; ingest and viewers on it.
# origin+edge: the origin pinned to CPU 0 takes the ingest, the edge pinned to CPU 1 pulls it
#              once and serves every viewer.
# The load generator is not pinned in either (two cores: in the second scenario both are
# taken by servers). CPU is counted for every server of the scenario over the same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ "${ITG_IN_NETNS:-}" != 1 ]; then
    command -v redis-server >/dev/null || {
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
    }
    (cd "$root" && cargo build --release -p server-mio --bin server-mio --bin itg-load)
    exec unshare -n env ITG_IN_NETNS=1 "$0" "$@"
fi
ip link set lo up
ADDR=127.0.0.1
RUNS=${RUNS:-3}
DURATION=${DURATION:-20}
if [ $# -gt 0 ]; then VIEWERS=("$@"); else VIEWERS=(50 200); fi
bin="$root/target/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no > "$work/redis.log" 2>&1 &

start_node() { # name cpu http ftl webrtc media role
    local dir="$work/$1"
    rm -rf "$dir"
    "$bin/server-mio" keys add --data-dir "$dir" --channel 77 | tail -1 > "$dir.key"
    local cluster=()
    [ "$7" != none ] && cluster=(--cluster redis://127.0.0.1:6390/0 --cluster-token bench \
        --role "$7" --node-url "http://$ADDR:$3")
    RUST_LOG=warn taskset -c "$2" "$bin/server-mio" --data-dir "$dir" --addr "$ADDR" \
        --http-port "$3" --ftl-port "$4" --webrtc-port "$5" --media-ports "$6" \
        --max-viewers 5000 --max-viewers-per-channel 5000 --offer-rate 0 --max-pending-per-address 5000 "${cluster[@]}" > "$dir.log" 2>&1 &
    echo $!
}

# The input (10 s of 1280x720 H.264 at 2.5 Mbit/s and Opus, looped) and MEDIA.
. "$here/media.sh"

results="$work/results.txt"
for scenario in one-node origin+edge; do
    if [ $scenario = one-node ]; then
        pids=$(start_node one 0 8080 8084 20000 9000-9100 none)
        viewers_at="$ADDR:8080"; key=$(cat "$work/one.key")
    else
        origin=$(start_node origin 0 8080 8084 20000 9000-9100 origin)
        edge=$(start_node edge 1 8090 8094 20010 9200-9300 edge)
        pids="$origin $edge"
        viewers_at="$ADDR:8090"; key=$(cat "$work/origin.key")
    fi
    sleep 3
    base_rss=0
    for p in $pids; do base_rss=$((base_rss + $(rss_kb "$p"))); done
    for n in "${VIEWERS[@]}"; do
        for r in $(seq "$RUNS"); do
            t0=0; for p in $pids; do t0=$((t0 + $(cpu_ticks "$p"))); done
            s0=$(date +%s.%N)
            out=$("$bin/itg-load" --target itg --http "$viewers_at" --ftl "$ADDR:8084" \
                --key "$key" --viewers "$n" --join-rate 100 --duration "$DURATION" \
                "${MEDIA[@]}" | grep ^RESULT)
            t1=0; for p in $pids; do t1=$((t1 + $(cpu_ticks "$p"))); done
            s1=$(date +%s.%N)
            rss=0; for p in $pids; do rss=$((rss + $(rss_kb "$p"))); done
            cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
            wall=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.1f", b - a }')
            echo "$scenario $n $r $out cpu_s=$cpu wall_s=$wall rss_kb=$rss base_rss_kb=$base_rss" | tee -a "$results"
            sleep 12 # the edge's pull outlives its last viewer by 10 s
        done
    done
    for p in $pids; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
python3 "$here/table.py" < "$results"
for n in "${VIEWERS[@]}"; do
    python3 - "$n" "$results" <<'EOF'
import statistics, sys
n, path = int(sys.argv[1]), sys.argv[2]
rows = {}
for line in open(path):
    p = line.split()
    if len(p) > 4 and int(p[1]) == n:
        kv = dict(x.split("=", 1) for x in p[4:] if "=" in x)
        rows.setdefault(p[0], []).append(kv)
def med(s, k):
    return statistics.median(float(r[k]) for r in rows[s])
if "one-node" in rows and "origin+edge" in rows:
    print(f"{n} viewers: latency p50 {med('origin+edge', 'lat_p50_ms') - med('one-node', 'lat_p50_ms'):+.2f} ms, "
          f"p99 {med('origin+edge', 'lat_p99_ms') - med('one-node', 'lat_p99_ms'):+.2f} ms through the edge; "
          f"delivered {med('origin+edge', 'mbps'):.0f} vs {med('one-node', 'mbps'):.0f} Mbit/s")
EOF
done
