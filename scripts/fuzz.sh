#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after the
# other, and prints one summary line per target:
#
#   TARGET  execs=N  exec/s=N  cov=N  ft=N  corpus=N  rss_mb=N  time=Ns  result=ok|FAIL
#
# cov/ft are libFuzzer's edge-coverage and feature counts at the end of the run. The
# lines are also written to fuzz/target/fuzz-summary.txt (docs/fuzzing.md quotes them).
#
# Environment:
#   FUZZ_RUNS=N        stop a target after N executions if that comes before SECONDS
#                      (the issue's bar: FUZZ_RUNS=10000000 scripts/fuzz.sh 1800)
#   FUZZ_TARGETS="a b" only these targets
#   FUZZ_JOBS=N        libFuzzer -fork=N workers per target (default 1: a shared machine)
#   FUZZ_SUMMARY=F     write the summary lines to F (relative to fuzz/; default
#                      target/fuzz-summary.txt), so two runs side by side keep theirs
#   FUZZ_NICE=1        the run only gets idle CPU (`nice -n 19` on a shared machine): a
#                      -timeout=1 hit then often means "not scheduled for 1 s", not a hang.
#                      The target runs in fork mode with -ignore_timeouts=1 (crashes and
#                      out-of-memory still stop it), and afterwards every timeout input is
#                      replayed: it is a hang (result=FAIL) only if one run of it takes
#                      1 s of CPU time or more; otherwise it is counted as `starved=N`.
#
# Each run starts from the committed corpus fuzz/corpus/<target>/ (read only) and writes
# what it discovers to fuzz/target/corpus-work/<target>/, so the committed corpus only
# changes when you minimise into it (see docs/fuzzing.md). Crashes, hangs over 1 s
# (-timeout=1) and out-of-memory (-rss_limit_mb=2048, -malloc_limit_mb=2048) land in
# fuzz/artifacts/<target>/ and make the result FAIL and the script exit 1.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail

secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: needs 'rustup toolchain install nightly' and 'cargo install cargo-fuzz'" >&2
    exit 2
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
runs_flag=()
if [[ -n "${FUZZ_RUNS:-}" ]]; then
    runs_flag=("-runs=${FUZZ_RUNS}")
fi
fork_flag=()
if [[ "${FUZZ_JOBS:-1}" -gt 1 ]]; then
    fork_flag=("-fork=${FUZZ_JOBS}")
fi
nice_mode="${FUZZ_NICE:-0}"
if [[ $nice_mode == 1 ]]; then
    fork_flag=("-fork=${FUZZ_JOBS:-1}" -ignore_timeouts=1 -ignore_ooms=0 -ignore_crashes=0)
fi

echo "fuzz.sh: building targets (release, sanitizer coverage)" >&2
cargo +nightly fuzz build -O >&2

mkdir -p target
summary="${FUZZ_SUMMARY:-target/fuzz-summary.txt}"
: >"$summary"
status=0
for t in $targets; do
    work="target/corpus-work/$t"
    mkdir -p "$work" "artifacts/$t" "corpus/$t"
    log="target/fuzz-$t.log"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -print_final_stats=1 "${runs_flag[@]}" "${fork_flag[@]}" >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    stat() { { grep -E "^stat::$1:" "$log" || true; } | tail -1 | awk '{print $2}'; }
    execs="$(stat number_of_executed_units)"
    rate="$(stat average_exec_per_sec)"
    rss="$(stat peak_rss_mb)"
    last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    corp="$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")"
    result=ok
    extra=""
    if [[ $nice_mode == 1 ]]; then
        # Fork mode prints no final stats: executions from its last status line.
        execs="${execs:-$(sed -nE 's/^#([0-9]+):.*/\1/p' <<<"$last")}"
        secs_run="$(sed -nE 's/.* time: ([0-9]+)s.*/\1/p' <<<"$last")"
        if [[ -n $execs && -n $secs_run && $secs_run -gt 0 ]]; then
            rate="${rate:-$((execs / secs_run))}"
        fi
        starved=0
        for a in artifacts/"$t"/timeout-*; do
            [[ -e $a ]] || continue
            bin="target/x86_64-unknown-linux-gnu/release/$t"
            cpu="$({ /usr/bin/time -f '%U %S' timeout 30 env ASAN_OPTIONS=detect_odr_violation=0 \
                "$bin" -runs=10 "$a" >/dev/null 2>"$log.replay"; } 2>&1; tail -1 "$log.replay")"
            if awk -v c="$cpu" 'BEGIN { split(c, f, " "); exit !((f[1] + f[2]) / 10 >= 1) }'; then
                echo "fuzz.sh: $a takes over 1 s of CPU: a hang" >&2
                result=FAIL
            else
                starved=$((starved + 1))
                mkdir -p "target/starved-artifacts/$t"
                mv "$a" "target/starved-artifacts/$t/"
            fi
        done
        extra=" starved=$starved"
        # Fork mode exits with the last job's code: 70 (libFuzzer's timeout exit code)
        # when the last failure was a timeout, even an ignored one.
        if [[ $rc -ne 0 && ! ($rc -eq 70 && $starved -gt 0) ]]; then
            result=FAIL
        fi
        if [[ -n "$(ls artifacts/"$t" 2>/dev/null || true)" ]]; then
            result=FAIL
        fi
    elif [[ $rc -ne 0 ]]; then
        result=FAIL
    fi
    if [[ $result == FAIL ]]; then
        status=1
    fi
    line="$(printf '%-18s execs=%s exec/s=%s cov=%s ft=%s corpus=%s rss_mb=%s time=%ss result=%s%s' \
        "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$took" "$result" "$extra")"
    echo "$line" | tee -a "$summary"
    if [[ $result == FAIL ]]; then
        grep -E "^(==[0-9]+==|SUMMARY|artifact_prefix|Test unit written|thread '.*' panicked)" "$log" \
            | head -5 >&2 || true
    fi
done
echo "fuzz.sh: summary in fuzz/$summary; logs in fuzz/target/fuzz-<target>.log" >&2
exit $status
