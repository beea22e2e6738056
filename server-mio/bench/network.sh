#!/usr/bin/env bash
# Viewers on real networks, and latency from the wire to the screen: headless Chromium watches
# a 640x360 30 fps stream (1 s keyframe interval, 1.5 Mbit/s) over WHEP from ITG, from an
# earlier ITG build and from Janus, all fed the same media in the same run, under each network
# condition in turn:
#   loss0 loss5 loss10 loss20  a random share of the servers' WebRTC datagrams dropped where the
#                              viewer receives them (nftables input hook): network loss
#   jitter                     a 20 Mbit/s link shared with bursty cross traffic (0-30 ms of
#                              queueing that comes and goes)
#   rate2m                     the viewer's link at 2 Mbit/s with a 300 ms queue
# and, at loss0 and loss5, also through the watch page (the player users get). Each frame
# carries its number as a barcode; the page reads it back with requestVideoFrameCallback, and
# the sender's log gives the instant the frame's last packet left it: wire to receive and wire
# to display, per frame (target/bench-network/frames.tsv) and as percentiles.
#
#   server-mio/bench/network.sh                          # every condition, 2 runs each
#   BASELINE=<git revision> server-mio/bench/network.sh  # "itg-base": that revision (default: none)
#   CONDITIONS="loss10 loss20" RUNS=3 server-mio/bench/network.sh
#   TARGETS="itg janus" ...                               # which servers (itg, itg-base, janus, watch)
#
# Needs root (namespaces, nftables, tc). Not run by CI. The viewer lives in a network namespace
# of its own (10.77.0.2) joined by a veth pair to the servers' (10.77.0.1), so that conditions
# on its link touch neither the servers' input nor the signalling's TCP.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ "${ITG_IN_NETNS:-}" != 1 ]; then
    [ -d "$root/server-mio/tests/browser/node_modules/puppeteer-core" ] ||
        (cd "$root/server-mio/tests/browser" && npm ci --no-audit --no-fund)
    . "$here/prepare.sh"
    bench_prepare janus ffmpeg chromium nftables iproute2 -- --bin server-mio --bin ftl-client
    exec unshare -n -m env ITG_IN_NETNS=1 "$0" "$@"
fi
mount --make-rprivate /
ip link set lo up
ip netns add itgview
ip link add v0 type veth peer name v1
ip link set v1 netns itgview
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
ip netns exec itgview ip link set lo up
ip netns exec itgview ip addr add 10.77.0.2/24 dev v1
ip netns exec itgview ip link set v1 up
# The cross traffic of the jitter condition ends at the viewer's input (no ICMP back).
ip netns exec itgview nft -f - <<'EOF'
table inet itg_sink {
  chain in {
    type filter hook input priority 0;
    udp dport 9 drop
  }
}
EOF
ADDR=10.77.0.1
bin="$root/target/release"
work=$(mktemp -d)
out="$root/target/bench-network"
mkdir -p "$out"
trap 'kill $(jobs -p) 2>/dev/null || true; ip netns del itgview 2>/dev/null || true; rm -rf "$work"' EXIT

# The input: a barcode of the frame number over a test picture, and Opus.
ffmpeg -loglevel error -f lavfi -i "color=c=black:s=640x32:r=30,geq=lum='if(lt(floor(X/40),12),if(bitand(floor(N/pow(2,floor(X/40))),1),235,16),if(bitand(floor(N/pow(2,floor(X/40)-12)),1),16,235))':cb=128:cr=128[bar];testsrc2=s=640x328:r=30[pic];[bar][pic]vstack" \
    -t 120 -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency -g 30 -bf 0 \
    -b:v 1500k -maxrate 1500k -bufsize 1500k -pix_fmt yuv420p -bsf:v h264_mp4toannexb -f h264 "$work/in.h264"
ffmpeg -loglevel error -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 120 -c:a libopus \
    -b:a 64k -frame_duration 20 -ac 2 "$work/in.ogg"
MEDIA=(--video "$work/in.h264" --audio "$work/in.ogg" --loop)

TARGETS=${TARGETS:-itg janus watch}
if [ -n "${BASELINE:-}" ] && [[ " $TARGETS " != *" itg-base "* ]]; then
    # The baseline right after ITG (each target once).
    if [[ " $TARGETS " == *" itg "* ]]; then
        TARGETS=$(echo " $TARGETS " | sed 's/ itg / itg itg-base /')
    else
        TARGETS="$TARGETS itg-base"
    fi
fi

start_itg() { # name server-binary http ftl webrtc media-ports
    local name=$1 server=$2
    "$server" keys add --data-dir "$work/$name" --channel 77 | tail -1 > "$work/$name.key"
    RUST_LOG=warn "$server" --data-dir "$work/$name" --addr "$ADDR" --http-port "$3" --ftl-port "$4" \
        --webrtc-port "$5" --media-ports "$6" > "$work/$name.log" 2>&1 &
    sleep 1
    RUST_LOG=warn "$bin/ftl-client" --server "$ADDR:$4" --key "$(cat "$work/$name.key")" "${MEDIA[@]}" \
        --frame-log "$work/$name.frames" > "$work/$name-sender.log" 2>&1 &
}
start_janus() {
    mkdir -p "$work/janus"
    for f in "$here"/janus/*.jcfg; do
        sed -e "s|@CONFIG@|$work/janus|; s|@HTTP_PORT@|8088|; s|\"lo\"|\"v0\"|" "$f" > "$work/janus/$(basename "$f")"
    done
    sed -i "s|ip = \"127.0.0.1\"|ip = \"$ADDR\"|" "$work/janus/janus.transport.http.jcfg"
    sed -i "s|^itg-bench: {|itg-bench: {\n\taudioiface = \"$ADDR\"\n\tvideoiface = \"$ADDR\"|" "$work/janus/janus.plugin.streaming.jcfg"
    janus -F "$work/janus" -C "$work/janus/janus.jcfg" > "$work/janus.log" 2>&1 &
    sleep 2
    RUST_LOG=warn "$bin/ftl-client" --rtp-video "$ADDR:15004" --rtp-audio "$ADDR:15002" "${MEDIA[@]}" \
        --frame-log "$work/janus.frames" > "$work/janus-sender.log" 2>&1 &
}

json=()
for t in $TARGETS; do
    case $t in
        itg) start_itg itg "$bin/server-mio" 8080 8084 20000 21000-21099
             json+=("{\"name\":\"itg\",\"kind\":\"whep\",\"page\":\"http://$ADDR:8080/api/streams\",\"url\":\"http://$ADDR:8080/whep/77\",\"frames\":\"$work/itg.frames\"}") ;;
        itg-base) start_itg itg-base "$root/target/baseline/release/server-mio" 8081 8085 20001 21100-21199
             json+=("{\"name\":\"itg-base\",\"kind\":\"whep\",\"page\":\"http://$ADDR:8081/api/streams\",\"url\":\"http://$ADDR:8081/whep/77\",\"frames\":\"$work/itg-base.frames\"}") ;;
        janus) start_janus
             json+=("{\"name\":\"janus\",\"kind\":\"janus\",\"page\":\"http://$ADDR:8088/janus/info\",\"url\":\"http://$ADDR:8088/janus\",\"mountpoint\":1,\"frames\":\"$work/janus.frames\"}") ;;
        watch) json+=("{\"name\":\"watch page\",\"kind\":\"watch\",\"latencyOnly\":true,\"page\":\"http://$ADDR:8080/watch/77\",\"frames\":\"$work/itg.frames\"}") ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
done
sleep 3
cat > "$work/chromium" <<EOF
#!/bin/sh
exec ip netns exec itgview chromium "\$@"
EOF
chmod +x "$work/chromium"
cross='import random, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d = b"x" * 1200
while True:
    for _ in range(random.randint(0, 60)):
        s.sendto(d, ("10.77.0.2", 9))
    time.sleep(random.uniform(0.02, 0.06))'
echo "$cross" > "$work/cross.py"
IFS=,; targets_json="[${json[*]}]"; unset IFS
NET_TARGETS="$targets_json" NET_CONDITIONS="${CONDITIONS:-loss0 loss5 loss10 loss20 jitter rate2m}" \
    RUNS="${RUNS:-2}" NET_SECONDS="${SECONDS_PER_RUN:-8}" CHROMIUM_WRAPPER="$work/chromium" \
    SERVER_UDP_PORTS="20000, 20001, 30000-39999" CROSS_TRAFFIC_CMD="python3 $work/cross.py" \
    NET_FRAMES="$out/frames.tsv" NODE_MODULES="$root/server-mio/tests/browser/node_modules" \
    node "$here/network.mjs" | tee "$out/report.txt"
