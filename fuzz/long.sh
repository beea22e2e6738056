#!/usr/bin/env bash
# Long fuzzing, off CI: every target (or those named) from its kept corpus, for a time or a
# number of executions each; the corpus is then minimized in place (`cargo fuzz cmin`) so what
# the repository keeps stays small, and CI's short runs start from it. Prints executions,
# coverage (libFuzzer's `cov` and `ft`), corpus size and crashes per target.
#
#   fuzz/long.sh --seconds 600 [TARGET...]
#   fuzz/long.sh --runs 10000000 [TARGET...]     # stops at the count (or after MAX_SECONDS,
#                                                #  6 h by default)
#   SANITIZER=none fuzz/long.sh ...              # without AddressSanitizer: several times the
#                                                #  executions per second; the workspace denies
#                                                #  unsafe code, so what ASan would catch is in
#                                                #  dependencies (default: address)
#
# A crash leaves its input under fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
limit=(-max_total_time=600)
case "${1:-}" in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2" -max_total_time="${MAX_SECONDS:-21600}"); shift 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
printf '| target | executions | exec/s | cov | ft | corpus files | corpus KB | result |\n|---|---|---|---|---|---|---|---|\n'
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    result=ok
    if ! cargo fuzz run -s "${SANITIZER:-address}" "$t" "corpus/$t" -- "${limit[@]}" -print_final_stats=1 >"$log" 2>&1; then
        result=CRASH; failed=1
        tail -40 "$log" >&2
    fi
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
    done_line=$(grep -E '#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo '?')
    ft=$(echo "$done_line" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo '?')
    if [ "$result" = ok ]; then
        # Keep what adds coverage; the hand-made seeds stay whatever cmin thinks of them.
        mkdir -p "seeds-$t"; cp corpus/"$t"/seed-* "seeds-$t"/ 2>/dev/null || true
        # Edges only (no hit counters): a tenth of the files for the same code reached.
        cargo fuzz cmin -s "${SANITIZER:-address}" "$t" "corpus/$t" -- -use_counters=0 >/dev/null 2>&1 || true
        cp "seeds-$t"/seed-* "corpus/$t"/ 2>/dev/null || true
        rm -rf "seeds-$t"
    fi
    files=$(ls "corpus/$t" | wc -l)
    kb=$(( $(cat "corpus/$t"/* | wc -c) / 1024 ))
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$runs" "$rate" "$cov" "$ft" "$files" "$kb" "$result"
    rm -f "$log"
done
exit $failed
