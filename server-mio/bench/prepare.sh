# Sourced by the benchmarks before they enter their network namespace (needs $root).
#   bench_prepare <debian packages...> -- <cargo build arguments...>
# installs what is missing and builds the release binaries; with BASELINE=<git revision>, also
# builds that revision's server in a worktree of its own (target/baseline/release/server-mio),
# so before/after is a ratio measured in one run on one machine.
bench_prepare() {
    local need=() pkgs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do pkgs+=("$1"); shift; done
    shift
    for p in "${pkgs[@]}"; do
        case $p in
            nftables) command -v nft >/dev/null || need+=("$p") ;;
            iproute2) command -v tc >/dev/null || need+=("$p") ;;
            *) command -v "$p" >/dev/null || need+=("$p") ;;
        esac
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
    fi
    (cd "$root" && cargo build --release -p server-mio "$@")
    if [ -n "${BASELINE:-}" ]; then
        local base="$root/target/bench-baseline"
        rm -rf "$base"; git -C "$root" worktree prune
        git -C "$root" worktree add --detach "$base" "$BASELINE"
        (cd "$base" && CARGO_TARGET_DIR="$root/target/baseline" cargo build --release -p server-mio --bin server-mio)
        git -C "$root" worktree remove --force "$base"
    fi
}
