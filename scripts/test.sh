#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, snapshot, CLI and kernel tests.
# Kernel tests need root, nft, ip and python3; as root this installs what is missing. Without root they
# are skipped loudly (and in CI, where CI=true, a missing prerequisite fails them instead).
set -euo pipefail
cd "$(dirname "$0")/.."

# libnftnl/libmnl headers build the netlink backend; nft, ip and python3 run the kernel tests.
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libnftnl 2>/dev/null || need+=(libnftnl-dev)
pkg-config --exists libmnl 2>/dev/null || need+=(libmnl-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]}…"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "WARNING: missing ${need[*]} and not root: install them, or kernel tests are SKIPPED" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
