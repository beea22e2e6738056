#!/usr/bin/env bash
# Where the server's time goes at load: ITG with N viewers (default 200) of the 2.5 Mbit/s input,
# sampled with `perf record -g` for 10 s; prints the top symbols. Root; not run by CI.
# INGEST=whip streams the input over WHIP instead of FTL; KEEP=<file> keeps perf.data.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=${1:-200}
if [ "${ITG_IN_NETNS:-}" != 1 ]; then
    command -v perf >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf; }
    (cd "$root" && cargo build --release -p server-mio --bin server-mio --bin itg-load)
    exec unshare -n -m env ITG_IN_NETNS=1 "$0" "$@"
fi
ip link set lo up
# Receive Packet Steering: what the viewers receive is processed on the generator's core (1),
# as it would be on the viewers' own machines, instead of being charged to the sending
# server as plain loopback does. RPS=0 keeps plain loopback. sysfs is mounted again in a
# private mount namespace so that it shows this network namespace's devices.
if [ "${RPS:-1}" = 1 ]; then
    mount --make-rprivate / && mount -t sysfs sysfs /sys
    echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus
    umount /sys
fi
ip link add v0 type veth peer name v1
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
ADDR=10.77.0.1
bin="$root/target/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 10 -c:v libx264 -profile:v baseline \
    -preset veryfast -tune zerolatency -g 60 -b:v 2500k -maxrate 2500k -bufsize 2500k -pix_fmt yuv420p \
    -bsf:v h264_mp4toannexb -f h264 "$work/in.h264"
"$bin/server-mio" keys add --data-dir "$work/itg" --channel 77 | tail -1 > "$work/key"
RUST_LOG=warn taskset -c 0 "$bin/server-mio" --data-dir "$work/itg" --addr "$ADDR" --max-viewers 5000 --offer-rate 0 --max-pending-per-address 5000 \
    --max-viewers-per-channel 5000 > "$work/itg.log" 2>&1 &
pid=$!
sleep 1
taskset -c 1 "$bin/itg-load" --target itg --ingest "${INGEST:-ftl}" --http "$ADDR:8080" --ftl "$ADDR:8084" --key "$(cat "$work/key")" \
    --viewers "$N" --join-rate 100 --duration 20 --video "$work/in.h264" > "$work/load.txt" &
sleep 8
perf record -F 499 --call-graph "${CALL_GRAPH:-fp}" -p "$pid" -o "$work/perf.data" -- sleep "${SECONDS_SAMPLED:-10}" 2>/dev/null
# The server's send counters while the viewers are still there: datagrams, sendmmsg calls,
# GSO messages, refusals.
curl -s "http://$ADDR:8080/metrics" | grep -E '^itg_webrtc_(sent|send_calls|gso_messages|send_full)_total' || true
wait %2 || true
cat "$work/load.txt"
# KEEP=<file> keeps the samples for `perf report -i <file>` (call graphs of one symbol, ...).
if [ -n "${KEEP:-}" ]; then cp "$work/perf.data" "$KEEP"; fi
perf report -i "$work/perf.data" --stdio --no-children --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
