#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, snapshot, CLI and kernel tests.
# Kernel tests need root, nft, ip and python3; as root this installs what is missing. Without root they
# are skipped loudly (and in CI, where CI=true, a missing prerequisite fails them instead).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing nftables, iproute2 and python3 (echo servers) for the kernel tests…"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 python3 >/dev/null
  else
    echo "WARNING: nft or ip is missing and this is not root: kernel tests will be SKIPPED" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
