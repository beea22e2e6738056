#!/usr/bin/env bash
# Soak: everything at once for a long time, and one healthy stream through all of it.
# Logs of every process are kept in target/soak-logs/ (the last run's).
# Not run by CI (it takes minutes to hours). Needs root (a private network namespace),
# redis-server and ffmpeg; Chromium viewers join too when /usr/bin/chromium and the browser
# tests' npm modules are there.
#
#   server-mio/bench/soak.sh [MINUTES]        # default 10; the closing figures use 60 and more
#
# On one machine, inside a fresh network namespace (loopback only): an origin (recording on)
# and an edge over Redis. Through the whole run:
#   - channel 1: the healthy stream (FTL, looping) and its healthy viewer on the origin
#     (itg-watch), which must lose no packet for good;
#   - channel 2: FTL sessions that start, stop and are replaced by WHIP; its key is rotated;
#   - channel 3: WHIP publishers replacing each other;
#   - probe viewers in the hundreds joining and leaving on the origin and the edge, and a few
#     Chromium viewers;
#   - every few minutes: Redis restarted, the edge killed and started again, and a hostile burst
#     from 127.0.0.2 (a WHEP flood, garbage on every port).
# Every interval it prints, per node, RSS, open files, threads, streams and viewers, and the
# healthy viewer's packets, losses and freezes. It fails if the origin's RSS or open files keep
# growing (the last third of the run against the first) or the healthy viewer lost a packet.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
MINUTES=${1:-10}
if [ "${ITG_IN_NETNS:-}" != 1 ]; then
    need=()
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v ffmpeg >/dev/null || need+=(ffmpeg)
    command -v curl >/dev/null || need+=(curl)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
    fi
    (cd "$root" && cargo build --release -p server-mio --bins)
    exec unshare -n env ITG_IN_NETNS=1 "$0" "$@"
fi
ip link set lo up
bin="$root/target/release"
work=$(mktemp -d)
INTERVAL=${INTERVAL:-60}
END=$(( $(date +%s) + MINUTES * 60 ))
logs="$root/target/soak-logs"
rm -rf "$logs"; mkdir -p "$logs"
# The loops go first (so nothing is started again), then what they started (a node or Redis
# restarted by a loop is its child, not this shell's job).
trap 'kill $(jobs -p) 2>/dev/null || true; for p in "$work"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; done; wait 2>/dev/null || true; cp "$work"/*.log "$work"/*.jsonl "$work"/samples.txt "$logs"/ 2>/dev/null || true; rm -rf "$work"' EXIT
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
running() { [ "$(date +%s)" -lt "$END" ]; }

# The healthy stream: 10 s of 1280x720 at 2.5 Mbit/s (MEDIA). The churn: the 320x180 test
# fixture (CHURN), so two cores carry it with Chromium decoding beside the servers.
. "$here/media.sh"
CHURN=(--video "$root/relay-core/tests/data/video-320x180-30fps-4s.h264"
    --audio "$root/relay-core/tests/data/audio-opus-48k-4s.ogg")

# --- the cluster ---------------------------------------------------------------------------
REDIS_PORT=6391
start_redis() {
    redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no \
        > "$work/redis.log" 2>&1 &
    echo $! > "$work/redis.pid"
}
start_node() { # name http ftl webrtc media role [extra...]
    local name=$1 http=$2 ftl=$3 webrtc=$4 media=$5 role=$6; shift 6
    RUST_LOG=warn "$bin/server-mio" --data-dir "$work/$name" --addr 127.0.0.1 \
        --http-port "$http" --ftl-port "$ftl" --webrtc-port "$webrtc" --media-ports "$media" \
        --cluster "redis://127.0.0.1:$REDIS_PORT/0" --cluster-token soak --role "$role" \
        --node-url "http://127.0.0.1:$http" --max-viewers 3000 --max-viewers-per-channel 3000 \
        "$@" >> "$work/$name.log" 2>&1 &
    echo $! > "$work/$name.pid"
}
for c in 1 2 3; do "$bin/server-mio" keys add --data-dir "$work/origin" --channel $c > /dev/null; done
"$bin/server-mio" keys add --data-dir "$work/edge" --channel 9 > /dev/null
key() { "$bin/server-mio" keys list --data-dir "$work/origin" | awk -F'\t' -v c="$1" '$1 == c {print $3}' | sed 's/(.*//'; }
start_redis
sleep 0.5
# The origin takes "any" role: it keeps its own viewers (the healthy one) rather than
# placing them on the edge, which pulls channels 2 and 3 for its viewers.
start_node origin 8080 8084 20000 9000-9100 any --record
start_node edge 8090 8094 20010 9200-9300 edge
sleep 1

# --- the healthy stream and its viewer -----------------------------------------------------
"$bin/ftl-client" --server 127.0.0.1:8084 --key "$(key 1)" "${MEDIA[@]}" --loop \
    > "$work/healthy-client.log" 2>&1 &
sleep 2
"$bin/itg-watch" --http 127.0.0.1:8080 --channel 1 --duration $(( MINUTES * 60 - 5 )) \
    --interval "$INTERVAL" > "$work/healthy.jsonl" 2> "$work/healthy.err" &
WATCH=$!

# --- the churn (each loop stops by itself at the end) ---------------------------------------
( # channel 2: FTL sessions come and go, now and then replaced by WHIP
    n=0
    while running; do
        n=$((n + 1))
        timeout 15 "$bin/ftl-client" --server 127.0.0.1:8084 --key "$(key 2)" "${CHURN[@]}" \
            --loop > /dev/null 2>&1 &
        sleep 8
        if [ $((n % 3)) = 0 ]; then
            timeout 6 "$bin/whip-client" --url http://127.0.0.1:8080/whip/2 --key "$(key 2)" \
                "${CHURN[@]}" --loop > /dev/null 2>&1 || true
        fi
        wait || true
        sleep 3
    done
) &
( # channel 3: WHIP publishers replacing each other
    while running; do
        timeout 40 "$bin/whip-client" --url http://127.0.0.1:8080/whip/3 --key "$(key 3)" \
            "${CHURN[@]}" --loop > /dev/null 2>&1 &
        sleep 25
    done
    wait || true
) &
( # probe viewers in the hundreds, on the origin and the edge
    while running; do
        for at in 127.0.0.1:8080 127.0.0.1:8090; do
            # 15 joins a second: under the per-address offer rate (20), as people behind one
            # address would come.
            timeout 60 "$bin/itg-load" --target itg --ingest none --http "$at" --channel 3 \
                --viewers 100 --join-rate 15 --duration 20 > /dev/null 2>&1 || true
        done
        sleep 5
    done
) &
if [ -x /usr/bin/chromium ] && [ -d "$root/server-mio/tests/browser/node_modules/playwright-core" ]; then
    ( cd "$root/server-mio/tests/browser" && while running; do
        timeout 90 node "$here/soak-chromium.mjs" http://127.0.0.1:8090/watch/2 http://127.0.0.1:8080/watch/3 60 \
            > /dev/null 2>&1 || true
        sleep 10
    done ) &
fi
( # every 5 minutes: channel 2's key is rotated (its sessions end, the next one uses the new key)
    while running; do
        sleep 300
        running && "$bin/server-mio" keys rotate --channel 2 --data-dir "$work/origin" > /dev/null
    done
) &
( # every 10 minutes: Redis goes away for 20 s
    while running; do
        sleep 600
        running || break
        kill "$(cat "$work/redis.pid")" 2>/dev/null || true
        sleep 20
        start_redis
    done
) &
( # every 7 minutes: the edge is killed and started again
    while running; do
        sleep 420
        running || break
        kill -9 "$(cat "$work/edge.pid")" 2>/dev/null || true
        sleep 5
        start_node edge 8090 8094 20010 9200-9300 edge
    done
) &
# The hostile burst: a browser-like WHEP offer that never connects, from another address.
printf 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n' > "$work/offer.sdp"
( # every 4 minutes, 15 s of: a WHEP flood, UDP garbage, FTL and HTTP garbage, from 127.0.0.2
    while running; do
        sleep 240
        running || break
        stop=$(( $(date +%s) + 15 ))
        for _ in 1 2 3 4; do
            ( while [ "$(date +%s)" -lt $stop ]; do
                curl -s -o /dev/null --interface 127.0.0.2 -X POST -H 'Content-Type: application/sdp' \
                    --data-binary @"$work/offer.sdp" http://127.0.0.1:8080/whep/1 || true
            done ) &
        done
        ( while [ "$(date +%s)" -lt $stop ]; do
            head -c 1200 /dev/urandom > /dev/udp/127.0.0.1/20000 2>/dev/null || true
            head -c 300 /dev/urandom > /dev/udp/127.0.0.1/9000 2>/dev/null || true
            printf 'GARBAGE %s\r\n\r\n' "$RANDOM" > /dev/tcp/127.0.0.1/8084 2>/dev/null || true
            printf 'GET /%s HTTP/1.1\r\nX: %s\r\n' "$RANDOM" "$(head -c 2000 /dev/zero | tr '\0' a)" \
                > /dev/tcp/127.0.0.1/8080 2>/dev/null || true
        done ) &
        wait
    done
) &

# --- sampling -------------------------------------------------------------------------------
metric() { # http metric
    curl -s --max-time 5 "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
sample() { # node http
    local pid; pid=$(cat "$work/$1.pid")
    if [ ! -d "/proc/$pid" ]; then echo "- - - - -"; return; fi
    local rss fds threads
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
    echo "$rss $fds $threads $(metric "$2" itg_streams_live) $(metric "$2" itg_viewers)"
}
printf '| t min | origin RSS KB | fds | threads | streams | peers | edge RSS KB | fds | threads | streams | peers | healthy video | lost | freezes | longest gap ms |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
t0=$(date +%s)
: > "$work/samples.txt"
while running; do
    sleep "$INTERVAL"
    o=$(sample origin 127.0.0.1:8080)
    e=$(sample edge 127.0.0.1:8090)
    h=$(tail -n 1 "$work/healthy.jsonl" 2>/dev/null || echo '{}')
    hv=$(echo "$h" | sed -n 's/.*"video":\([0-9]*\).*/\1/p')
    hl=$(echo "$h" | sed -n 's/.*"lost":\([0-9]*\).*/\1/p')
    hf=$(echo "$h" | sed -n 's/.*"freezes":\([0-9]*\).*/\1/p')
    hg=$(echo "$h" | sed -n 's/.*"longest_gap_ms":\([0-9]*\).*/\1/p')
    m=$(( ($(date +%s) - t0) / 60 ))
    echo "$m $o $e" >> "$work/samples.txt"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$m" "$(echo "$o" | tr ' ' '|' | sed 's/|/ | /g')" \
        "$(echo "$e" | tr ' ' '|' | sed 's/|/ | /g')" "${hv:--}" "${hl:--}" "${hf:--} | ${hg:--}"
done
wait $WATCH || true
tail -n 1 "$work/healthy.jsonl" >&2
# What the origin says of the healthy stream (its skips tell a starved loop from a bad path).
curl -s --max-time 5 http://127.0.0.1:8080/api/streams | python3 -c 'import json,sys
for s in json.load(sys.stdin)["streams"]:
    if s["channel"] == 1:
        print("healthy stream on the origin:", {k: s.get(k) for k in ("viewers","lost","recovered","viewer_skips","viewer_skips_late","late_packets","dropped_foreign_source")})' >&2 || true

# --- the verdict ------------------------------------------------------------------------------
python3 - "$work/samples.txt" "$work/healthy.jsonl" <<'PY'
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
n = len(rows)
def col(i):
    return [int(r[i]) for r in rows if r[i].isdigit()]
rss, fds = col(1), col(2)
done = [json.loads(l) for l in open(sys.argv[2]) if '"done"' in l]
failed = []
if n >= 6:
    third = max(1, n // 3)
    first, last = rss[:third], rss[-third:]
    if max(last) > max(first) * 1.25 + 20 * 1024:
        failed.append(f"origin RSS grew: first third max {max(first)} KB, last third max {max(last)} KB")
    if max(fds[-third:]) > max(fds[:third]) + 50:
        failed.append(f"origin open files grew: {max(fds[:third])} -> {max(fds[-third:])}")
if not done:
    failed.append("the healthy viewer did not finish")
elif done[0]["lost"] > 0 or done[0]["video"] == 0:
    failed.append(f"the healthy viewer: {done[0]}")
print(f"soak: {n} intervals; origin RSS {min(rss or [0])}-{max(rss or [0])} KB, fds {min(fds or [0])}-{max(fds or [0])}; healthy viewer {done[0] if done else None}")
if failed:
    print("SOAK FAILED: " + "; ".join(failed))
    sys.exit(1)
print("soak passed")
PY
