#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, snapshot, CLI and kernel tests on
# the running kernel, then (in CI) the kernel matrix: the kernel tests on Linux 6.1 and 6.12 in VMs.
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

# The kernel matrix: the kernel test binaries again on Debian 12's 6.1 and the 6.12 LTS, booted
# in VMs (scripts/kernel-matrix.sh; the host's kernel was the run above). CI runs it; elsewhere
# NFCOMPILE_KERNEL_MATRIX=1 asks for it, and NFCOMPILE_KERNEL_MATRIX=0 leaves it out in CI too.
matrix=${NFCOMPILE_KERNEL_MATRIX:-}
[ -n "$matrix" ] || { [ "${CI:-}" = true ] && matrix=1 || matrix=0; }
if [ "$matrix" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ERROR: the kernel matrix needs root (it installs qemu and boots VMs)" >&2
    exit 1
  fi
  bash scripts/kernel-matrix.sh 6.1 6.12
elif [ "${CI:-}" = true ]; then
  echo "WARNING: NFCOMPILE_KERNEL_MATRIX=0: the kernel matrix (6.1, 6.12) was SKIPPED" >&2
else
  echo "note: the kernel matrix (Linux 6.1 and 6.12 in VMs) did not run: CI=true or NFCOMPILE_KERNEL_MATRIX=1 runs it (tens of minutes)" >&2
fi
