#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS_PER_TARGET seconds
# each (default 600, i.e. 10 CPU-minutes), one after another, with the
# limits docs/fuzzing.md states: inputs up to 4 KiB, one second per input,
# 2 GiB of memory. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). The targets are built once, first, so
# editing the sources while it runs changes nothing. New inputs go to
# fuzz/corpus/<target> (not committed), crashes to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(text remote_write promql_parse promql_eval chunk config rules alertmanager template api)
fi
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
bin="target/x86_64-unknown-linux-gnu/release"
mkdir -p bin
for t in "${targets[@]}"; do cp "$bin/$t" "bin/$t"; done
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t"
  echo "== $t: ${seconds}s"
  # The leak reports of these targets were one-time initialisation or
  # query threads finishing after their input, never reproducible on a
  # rerun of the input: see docs/fuzzing.md.
  leaks=1
  case "$t" in template | rules | api) leaks=0 ;; esac
  # CPU time (user + system) is what the budget counts; GNU time prints it.
  /usr/bin/time -f "cpu_seconds: %U + %S" \
    "bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -max_len=4096 \
    -timeout=1 -rss_limit_mb=2048 -detect_leaks="$leaks" -print_final_stats=1 \
    "corpus/$t" "seeds/$t" "regressions/$t" 2>&1 |
    grep -E "^(Done|cpu_seconds|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|SUMMARY)|panicked|ERROR|Test unit written" || true
done
