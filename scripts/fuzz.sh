#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (README.md, "Fuzzing") for a fixed
# number of inputs each, with a per-input timeout, an RSS limit and a cap on
# any single allocation, and reports per target: inputs run, crashes
# (panics, sanitizer errors), timeouts, out-of-memory, peak RSS.
#
#   scripts/fuzz.sh [--runs N] [--max-time S] [--timeout S] [--rss-mb MB]
#                   [--malloc-mb MB] [--jobs N] [--no-build] [--install] [target ...]
#
# Defaults: every target, 1000000 inputs, 10 s per input, 2048 MB RSS, no
# single allocation above 128 MB (a declared length must not be believed),
# no time cap. Needs the nightly toolchain and cargo-fuzz (--install installs
# them when missing, and exits 3 when they cannot be had):
#   rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz --locked
# Build output goes to $FUZZ_TARGET_DIR (default: $CARGO_TARGET_DIR/fuzz, or
# fuzz/target); new inputs libFuzzer finds are kept there too, the committed
# seeds (fuzz/corpus/<target>/) are only read. A crashing input is saved as
# fuzz/artifacts/<target>/crash-… (timeout-…, oom-…), reproduced with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-…
# Exit status: 0 when every target ran clean, 1 otherwise (2: bad usage or no
# toolchain, 3: --install could not install it).
set -uo pipefail
cd "$(dirname "$0")/.."

runs=1000000 max_time=0 timeout=10 rss_mb=2048 malloc_mb=128 jobs=1 build=1 install=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --max-time) max_time="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --rss-mb) rss_mb="$2"; shift 2 ;;
    --malloc-mb) malloc_mb="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --install) install=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^keymetrics-agent-fuzz$')
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<<"$(echo $all)"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { echo "unknown target $t (targets: $(echo $all))" >&2; exit 2; }
done

target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}"
target_dir="${target_dir:-$PWD/fuzz/target}"
if [ "$install" = 1 ]; then
  start=$(date +%s)
  if ! rustc +nightly -vV >/dev/null 2>&1; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal || { echo "fuzz: the nightly toolchain cannot be installed here" >&2; exit 3; }
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --version '^0.13' --locked || { echo "fuzz: cargo-fuzz cannot be installed here" >&2; exit 3; }
  fi
  echo "   toolchain ready in $(( $(date +%s) - start )) s"
fi
triple=$(rustc +nightly -vV 2>/dev/null | sed -n 's/^host: //p')
if [ -z "$triple" ] || ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain and cargo-fuzz:" >&2
  echo "  rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz" >&2
  exit 2
fi
if [ "$build" = 1 ]; then
  echo "== building ${#targets[@]} fuzz targets (nightly, AddressSanitizer)"
  start=$(date +%s)
  one=(); [ ${#targets[@]} = 1 ] && one=("${targets[0]}")
  cargo +nightly fuzz build --target-dir "$target_dir" "${one[@]}" 2>&1 | grep -Ev '^\s+(Compiling|Downloaded|Downloading)' || true
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz: build failed" >&2; exit 1; }
  echo "   built in $(( $(date +%s) - start )) s"
fi
bin_dir="$target_dir/$triple/release"
work="$target_dir/runs"
mkdir -p "$work"

# Longest input tried: room for the largest seed (a real getMonitorData reply).
max_len() { case "$1" in monitor_data) echo 16384 ;; *) echo 4096 ;; esac; }
export -f max_len

# One target: prints its report line (tab-separated) on stdout.
run_one() {
  local t="$1"
  local log="$work/$t.log" scratch="$work/corpus/$t" art="fuzz/artifacts/$t/"
  mkdir -p "$scratch" "$art"
  local args=(-runs="$runs" -timeout="$timeout" -rss_limit_mb="$rss_mb"
    -malloc_limit_mb="$malloc_mb" -max_len="$(max_len "$t")" -print_final_stats=1
    -artifact_prefix="$art")
  [ "$max_time" != 0 ] && args+=(-max_total_time="$max_time")
  local start rc; start=$(date +%s)
  "$bin_dir/$t" "${args[@]}" "$scratch" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - start ))
  local inputs peak crashes=0 timeouts=0 ooms=0 artifact
  inputs=$(sed -n 's/^stat::number_executed_units: *//p' "$log" | tail -1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  if [ -z "$inputs" ]; then
    # No final stats (a crash ends the run): the last progress line.
    inputs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    peak=$(grep -oE 'rss: [0-9]+Mb' "$log" | tail -1 | grep -oE '[0-9]+')
  fi
  grep -qE 'ERROR: libFuzzer: timeout' "$log" && timeouts=1
  grep -qE 'ERROR: libFuzzer: (out-of-memory|malloc limit)|malloc\(.*\) exceeds|out-of-memory \(' "$log" && ooms=1
  if [ "$rc" != 0 ] && [ $timeouts = 0 ] && [ $ooms = 0 ]; then crashes=1; fi
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${inputs:-0}" "$crashes" "$timeouts" "$ooms" \
    "${peak:-?}" "$secs" "${artifact:--}"
}
export -f run_one
export runs max_time timeout rss_mb malloc_mb bin_dir work

echo "== fuzzing ${#targets[@]} targets: runs=$runs timeout=${timeout}s rss=${rss_mb}MB malloc=${malloc_mb}MB$([ "$max_time" = 0 ] || echo " max_time=${max_time}s") (logs: $work)"
results=$(printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {})
printf '\n%-16s %10s %8s %9s %5s %13s %7s  %s\n' target inputs crashes timeouts OOMs "peak RSS MB" seconds artifact
failed=0 total=0
while IFS=$'\t' read -r t inputs crashes timeouts ooms peak secs artifact; do
  printf '%-16s %10s %8s %9s %5s %13s %7s  %s\n' "$t" "$inputs" "$crashes" "$timeouts" "$ooms" "$peak" "$secs" "$artifact"
  total=$(( total + inputs ))
  [ $(( crashes + timeouts + ooms )) = 0 ] || failed=$(( failed + 1 ))
done < <(sort <<<"$results")
echo
if [ "$failed" = 0 ]; then
  echo "${#targets[@]} targets, $total inputs, no crash, timeout or OOM"
else
  echo "$failed of ${#targets[@]} targets failed (see fuzz/artifacts/ and $work/<target>.log)"
fi
echo "fuzz: $(( ${#targets[@]} - failed )) passed, $failed failed"
[ "$failed" = 0 ]
