#!/usr/bin/env bash
# Side-by-side benchmark: ITG and Janus relaying the same H.264 + Opus to N WebRTC viewers.
# Not run by CI. Needs root (a private network namespace) and installs Debian's janus.
#
#   server-mio/bench/compare.sh [VIEWERS...]      # default: 1 50 200 500
#   TARGETS="itg itg-whip" server-mio/bench/compare.sh 50 200   # ITG with FTL vs WHIP ingest
#   BASELINE=<git revision> server-mio/bench/compare.sh 200      # adds "itg-base": that revision
#   SERVER_CPU_PCT=50 server-mio/bench/compare.sh 500           # the server capped at half its core: overload
#   BURST_MS=5 server-mio/bench/compare.sh 200                  # a smoother encoder: the input's bursts
#                                                               # capped at 5 ms of its peak (default 100, as ftl-sdk)
#
# Everything runs inside a fresh network namespace with loopback and one veth
# pair (10.77.0.1 on veth v0, a test host of our own): Janus's ICE (libnice) does not use loopback, so both
# servers are reached on the dummy address. The server under test is pinned to CPU 0, the load
# generator to CPU 1. Each scenario runs RUNS times (default 3); the table shows medians.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ "${ITG_IN_NETNS:-}" != 1 ]; then
    . "$here/prepare.sh"
    bench_prepare janus ffmpeg -- --bin server-mio --bin itg-load
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
# SERVER_CPU_PCT=N caps the server under test at N % of its core (a cgroup's CPU quota, in
# periods of 4 ms (25 % at least) so that it runs often, not in long bursts whose sends would overflow the
# receiving core's backlog): an overloaded server while the generator still keeps up.
cap_cpu() { # pid
    [ -n "${SERVER_CPU_PCT:-}" ] || return 0
    local g
    if [ -d /sys/fs/cgroup/cpu ]; then
        g=/sys/fs/cgroup/cpu/itg-bench; mkdir -p "$g"
        echo 4000 > "$g/cpu.cfs_period_us"; echo $((SERVER_CPU_PCT * 40)) > "$g/cpu.cfs_quota_us"
    else
        g=/sys/fs/cgroup/itg-bench; mkdir -p "$g"
        echo "$((SERVER_CPU_PCT * 40)) 4000" > "$g/cpu.max"
    fi
    echo "$1" > "$g/cgroup.procs"
}
ip link add v0 type veth peer name v1
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
ADDR=10.77.0.1
RUNS=${RUNS:-3}
TARGETS=${TARGETS:-itg janus}
[ -n "${BASELINE:-}" ] && TARGETS="$TARGETS itg-base"
DURATION=${DURATION:-20}
if [ $# -gt 0 ]; then VIEWERS=("$@"); else VIEWERS=(1 50 200 500); fi
bin="$root/target/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

start_itg() { # [server binary]
    local server=${1:-$bin/server-mio}
    rm -rf "$work/itg"
    "$server" keys add --data-dir "$work/itg" --channel 77 | tail -1 > "$work/key"
    # The load generator joins every viewer from one address: no per-address offer limits
    # (a build from before they existed has no such flags).
    local fair=()
    "$server" --help | grep -q -- --offer-rate && fair=(--offer-rate 0 --max-pending-per-address 5000)
    RUST_LOG=warn taskset -c 0 "$server" --data-dir "$work/itg" --addr "$ADDR" \
        --http-port 8080 --ftl-port 8084 --webrtc-port 20000 --max-viewers 5000 \
        "${fair[@]}" --max-viewers-per-channel 5000 > "$work/itg.log" 2>&1 &
    echo $!
}

start_janus() {
    mkdir -p "$work/janus"
    for f in "$here"/janus/*.jcfg; do
        sed -e "s|@CONFIG@|$work/janus|; s|@HTTP_PORT@|8088|; s|\"lo\"|\"v0\"|" "$f" > "$work/janus/$(basename "$f")"
    done
    sed -i "s|ip = \"127.0.0.1\"|ip = \"$ADDR\"|" "$work/janus/janus.transport.http.jcfg"
    sed -i "s|^itg-bench: {|itg-bench: {\n\taudioiface = \"$ADDR\"\n\tvideoiface = \"$ADDR\"|" "$work/janus/janus.plugin.streaming.jcfg"
    taskset -c 0 janus -F "$work/janus" -C "$work/janus/janus.jcfg" > "$work/janus.log" 2>&1 &
    echo $!
}

run_load() { # target pid viewers
    local target=$1 pid=$2 n=$3 t0 t1 r0 r1 out
    t0=$(cpu_ticks "$pid"); s0=$(date +%s.%N)
    if [ "$target" = janus ]; then
        out=$(taskset -c 1 "$bin/itg-load" --target janus --http "$ADDR:8088" \
            --rtp-video "$ADDR:15004" --rtp-audio "$ADDR:15002" --viewers "$n" --join-rate 100 \
            --duration "$DURATION" --server-pid "$pid" "${MEDIA[@]}" | grep ^RESULT)
    else
        local ingest=ftl
        [ "$target" = itg-whip ] && ingest=whip
        out=$(taskset -c 1 "$bin/itg-load" --target itg --ingest "$ingest" --http "$ADDR:8080" \
            --ftl "$ADDR:8084" --key "$(cat "$work/key")" --viewers "$n" --join-rate 100 \
            --duration "$DURATION" --server-pid "$pid" "${MEDIA[@]}" | grep ^RESULT)
    fi
    t1=$(cpu_ticks "$pid"); s1=$(date +%s.%N)
    sleep 3 # let the server tear the sessions down before the next run
    local cpu wall
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
    wall=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.1f", b - a }')
    # Datagrams the namespace's sockets dropped for a full receive buffer so far (viewers' or
    # the server's ingest): loss that is the kernel's, not the server's.
    local rcvbuf_errors
    rcvbuf_errors=$(awk '/^Udp:/ { if (n++) { for (i = 1; i <= NF; i++) if (h[i] == "RcvbufErrors") print $i } else split($0, h) }' /proc/net/snmp)
    echo "$out cpu_s=$cpu wall_s=$wall rss_kb=$(rss_kb "$pid") base_rss_kb=$base_rss udp_rcvbuf_errors=$rcvbuf_errors"
}

# The input (10 s of 1280x720 H.264 at 2.5 Mbit/s and Opus, looped) and MEDIA.
. "$here/media.sh"
MEDIA+=(--burst-ms "${BURST_MS:-100}")

results="$work/results.txt"
# Runs interleave the targets (A B A B ...), each on a freshly started server: the machine's
# load from other tenants drifts over minutes, and two identical builds run one after the
# other read up to ~15 % apart in CPU; side by side in time they compare fairly.
for n in "${VIEWERS[@]}"; do
    for r in $(seq "$RUNS"); do
        for target in $TARGETS; do
            case $target in
                janus) pid=$(start_janus) ;;
                itg-base) pid=$(start_itg "$root/target/baseline/release/server-mio") ;;
                *) pid=$(start_itg) ;;
            esac
            sleep 2
            cap_cpu "$pid"
            base_rss=$(rss_kb "$pid")
            echo "$target $n $r $(run_load $target "$pid" "$n")" | tee -a "$results"
            kill "$pid"; wait "$pid" 2>/dev/null || true
        done
    done
done
python3 "$here/table.py" < "$results"
