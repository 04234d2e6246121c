#!/usr/bin/env bash
# Runs each fuzz target for a given time, one after another on one core, and prints its executions.
#
#   fuzz/run.sh <seconds-per-target> [target ...]      (default: every target in fuzz/Cargo.toml)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target fuzzes a scratch copy
# of its checked-in corpus (fuzz/corpus/<target>/), so what it adds never grows the repository; the copy's
# path is printed, to pick new seeds from (name them after what they exercise). One libFuzzer process per
# target, one target at a time, so a run takes one core. Known findings (`Known` in the fuzzcheck crate)
# are tolerated; anything else that fails stops that target, is saved under fuzz/artifacts/<target>/ and
# is printed. Exits 1 if any target crashed, 2 if the build failed.
#
# Extra libFuzzer flags can be given in FUZZ_FLAGS, e.g. FUZZ_FLAGS="-max_len=4096".
set -uo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 <seconds-per-target> [target ...]" >&2
    exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/webhooks-dispatch-fuzz.XXXXXX")
if ! cargo +nightly fuzz build >"$scratch/build.log" 2>&1; then
    cat "$scratch/build.log" >&2
    exit 2
fi
status=0
summary=()
for target in "${targets[@]}"; do
    work="$scratch/$target"
    mkdir -p "$work" "artifacts/$target"
    cp -a "corpus/$target/." "$work/"
    crashes_before=$(find "artifacts/$target" -name 'crash-*' | wc -l)
    log="$scratch/$target.log"
    started=$SECONDS
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags.
    cargo +nightly fuzz run "$target" "$work" -- \
        -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_FLAGS:-} >"$log" 2>&1
    rc=$?
    elapsed=$((SECONDS - started))
    executions=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    crashes=$(($(find "artifacts/$target" -name 'crash-*' | wc -l) - crashes_before))
    line="$target: ${executions:-?} executions in ${elapsed}s, $crashes crash(es), corpus $(find "$work" -type f | wc -l) inputs"
    summary+=("$line")
    echo "$line (log: $log)"
    if [[ $rc -ne 0 || $crashes -gt 0 ]]; then
        status=1
        grep -A3 "panicked at" "$log" | head -12 | sed 's/^/    /'
        grep -E "^(Failing input|	artifacts)" "$log" | sed 's/^/    /'
    fi
done
echo
echo "scratch corpora and logs: $scratch"
printf '%s\n' "${summary[@]}"
exit $status
