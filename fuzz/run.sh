#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each), seeded from fuzz/seeds/TARGET
# (the snapshot scenarios for compile_input; decision bytes for the structured targets).
# Installs cargo-fuzz from crates.io if missing; runs on stable via RUSTC_BOOTSTRAP. Prints
# executions and crashes per target, appends them to fuzz/runs.md, prints the crash-free totals
# recorded there, exits 1 if any target crashed (the crashing input is in
# fuzz/artifacts/TARGET/: turn it into a regression test).
# The targets run safe Rust only (the netlink target encodes and decodes in pure Rust, never
# through libnftnl), where AddressSanitizer finds nothing and costs about 3× the executions;
# it is off unless FUZZ_SANITIZER=address. The structured targets (every target but
# compile_input) read their bytes as bounded choices, where comparison tracing guides little
# and costs about 40% of the time: they are built without it, in a target dir of their own
# so that switching between targets does not rebuild.
# They also use mimalloc (fuzz_targets/choices.rs): glibc's malloc was ~40% of their time.
# Usage: fuzz/run.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The netlink target links nfcompile-netlink, which builds against libnftnl/libmnl.
if ! pkg-config --exists libnftnl libmnl 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libnftnl-dev libmnl-dev >/dev/null
  else
    echo "fuzz/run.sh: needs pkg-config, libnftnl-dev and libmnl-dev (run as root to install them)" >&2
    exit 1
  fi
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
  log=$(mktemp)
  rc=0
  build=()
  [ "$target" = compile_input ] || build=(--no-trace-compares --target-dir target/structured)
  # Build first, so that a build failure stops here instead of being recorded as a run.
  RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer "${FUZZ_SANITIZER:-none}" "${build[@]}" "$target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" "${build[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=20 2>&1 | tee "$log" | grep -E "^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|panicked)" || true
  grep -q "stat::number_of_executed_units" "$log" || rc=1
  grep -qE "^SUMMARY|panicked at|deadly signal" "$log" && rc=1
  execs=$(grep -oP "stat::number_of_executed_units: \K[0-9]+" "$log" || echo 0)
  line="$(date +%Y-%m-%d) $target: $execs executions in ${secs} s, $([ "$rc" = 0 ] && echo "no crash" || echo "CRASH (see fuzz/artifacts/$target)")"
  summary+=("$line")
  echo "$line" >> runs.md
  [ "$rc" = 0 ] || failed=1
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
# Over time: every run recorded without a crash (and not ended early), per target.
echo "crash-free executions recorded in fuzz/runs.md:"
awk '/ executions in .*, no crash/ {t = $2; sub(":", "", t); n[t] += $3}
     END {for (t in n) printf "  %-20s %12d\n", t, n[t]}' runs.md | sort
exit "$failed"
