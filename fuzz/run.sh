#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each), seeded with the snapshot
# scenarios. Installs cargo-fuzz from crates.io if missing; runs on stable via RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  mkdir -p "corpus/$target"
  cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -print_final_stats=1
done
