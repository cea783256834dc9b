#!/usr/bin/env bash
# Cold-load scale benchmark: for each size, compile a synthetic cluster (services × 5 endpoints
# over 10 nodes), then time `nft -f` of the rendered script in a fresh network namespace.
# Needs root; installs nftables and iproute2 if missing. Prints a table and writes it to
# benches/results/scale-<date>.md.  Usage: benches/scale.sh [SIZES…]  (default: 1000 5000 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scale.sh needs root (network namespaces, nft)" >&2; exit 1; }
command -v nft >/dev/null && command -v ip >/dev/null && command -v bc >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 bc time >/dev/null; }
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 50000)

cargo build -q --release -p nfcompile-benches --bin nfcompile-synth
cargo build -q --release -p nfcompile-cli
work=$(mktemp -d); ns="nfc-scale-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p benches/results
out="benches/results/scale-$(date +%Y-%m-%d).md"
{
  echo "# nft -f cold load of nfcompile's script ($(nproc) cores, $(uname -r), $(nft --version))"
  echo
  echo "| services | endpoints | compile (CLI, from native IR) | script size | nft -f wall | nft -f sys | elements |"
  echo "|---:|---:|---:|---:|---:|---:|---:|"
} > "$out"
for n in "${sizes[@]}"; do
  ./target/release/nfcompile-synth "$n" 5 10 --ir > "$work/in.json"
  t0=$(date +%s.%N)
  ./target/release/nfcompile render -f "$work/in.json" > "$work/rules.nft"
  t1=$(date +%s.%N)
  compile=$(echo "$t1 - $t0" | bc)
  elements=$(grep -c ' : \| \. .*,$' "$work/rules.nft" || true)
  ip netns add "$ns"
  /usr/bin/time -f "%e %S" -o "$work/time" ip netns exec "$ns" nft -f "$work/rules.nft"
  read -r wall sys < "$work/time"
  ip netns del "$ns"
  size=$(du -h "$work/rules.nft" | cut -f1)
  echo "| $n | $((n * 5)) | ${compile}s | $size | ${wall}s | ${sys}s | ~$elements |" >> "$out"
done
cat "$out"
echo "written to $out"
