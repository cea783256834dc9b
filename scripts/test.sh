#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, snapshot, CLI and kernel tests.
# Kernel tests need root, nft and ip; as root this installs what is missing. Without root they
# are skipped loudly (and in CI, where CI=true, a missing prerequisite fails them instead).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing nftables and iproute2 for the kernel tests…"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null
  else
    echo "WARNING: nft or ip is missing and this is not root: kernel tests will be SKIPPED" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
