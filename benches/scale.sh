#!/usr/bin/env bash
# The scale benchmark, side by side with the peers, on one machine in one run. For each size
# (services × 5 endpoints over 10 nodes; every 10th a NodePort, every 20th a LoadBalancer,
# every 40th eTP=Local, every 50th with affinity), each in a fresh network namespace:
#   nfcompile apply (CLI, netlink) · library apply (netlink-bench, no process start-up) ·
#   nft -f of nfcompile's script · nft -f of kube-proxy's nftables-mode layout ·
#   iptables-legacy-restore / iptables-nft-restore of kube-proxy's iptables-mode rules ·
#   readback (netlink) vs `nft list table`
# then one-endpoint incremental updates at 50k (sync-bench) and the datapath's new-connection
# rate at 1 / 10k / 50k services (datapath-bench). A peer load is stopped after LIMIT seconds,
# and not started when the previous size extrapolates (as O(n²)) beyond 4 × LIMIT; the table
# says which. Every load is the median of REPEAT runs (a load that takes over 20 s runs
# once): on a small shared machine one run can be off by 30%.
# Needs root; installs what it needs. Writes benches/results/scale-<date>.md and prints it.
# Usage: sudo benches/scale.sh [SIZES…]   (default: 1000 5000 50000)
# Environment: LIMIT=300 (s), REPEAT=3, SYNC_SIZE=50000, DATAPATH_SIZES="1 10000 50000"
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scale.sh needs root (network namespaces, nft, iptables)" >&2; exit 1; }
need=()
for t in nft:nftables ip:iproute2 bc:bc iptables-legacy-restore:iptables pkg-config:pkg-config; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ -x /usr/bin/time ] || need+=(time)
dpkg -s libnftnl-dev libmnl-dev >/dev/null 2>&1 || need+=(libnftnl-dev libmnl-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 50000)
limit=${LIMIT:-300}
repeat=${REPEAT:-3}
sync_size=${SYNC_SIZE:-50000}
read -r -a datapath_sizes <<< "${DATAPATH_SIZES:-1 10000 50000}"

cargo build -q --release -p nfcompile-benches -p nfcompile-cli
bin=./target/release
work=$(mktemp -d); ns="nfc-scale-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Wall seconds of a command run inside a fresh namespace (deleted afterwards); "stopped" when
# it needed more than LIMIT seconds.
timed() {
  ip netns add "$ns"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  timeout "$limit" ip netns exec "$ns" "$@" >/dev/null || rc=$?
  t1=$(date +%s.%N)
  ip netns del "$ns"
  if [ "$rc" = 124 ]; then echo stopped; return; fi
  [ "$rc" = 0 ] || { echo "failed: $*" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l | xargs printf '%.3f'
}
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# `timed`, as the median of REPEAT runs; a load slower than 20 s (or stopped) runs once.
timed_median() {
  local first i all
  first=$(timed "$@")
  if [ "$first" = stopped ] || [ "$(echo "$first > 20" | bc -l)" = 1 ]; then echo "$first"; return; fi
  all=("$first")
  for ((i = 1; i < repeat; i++)); do all+=("$(timed "$@")"); done
  printf '%s\n' "${all[@]}" | median
}
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.1f'; }
# Would a peer that took $2 s at $1 services take more than 4 × LIMIT at $3 (if O(n²))? Then
# it is not even started; otherwise it runs, stopped after LIMIT seconds.
too_slow() { [ "$2" = stopped ] || { [ -n "$2" ] && [ "$(echo "$2 * ($3 / $1)^2 > 4 * $limit" | bc -l)" = 1 ]; }; }

declare -A cli lib ours kn ilr inr rb lst
prev_n=""; prev_kn=""; prev_ilr=""; prev_inr=""
for n in "${sizes[@]}"; do
  echo "== $n services" >&2
  $bin/nfcompile-synth "$n" 5 10 --ir > "$work/in.json"
  $bin/nfcompile render -f "$work/in.json" > "$work/ours.nft"
  $bin/peer-rules kube-nftables "$n" 5 10 > "$work/kube.nft"
  $bin/peer-rules kube-iptables "$n" 5 10 > "$work/kube.iptables"

  cli[$n]=$(timed_median "$bin/nfcompile" apply -q -f "$work/in.json")
  # Library apply, nft -f of our script and readback, from netlink-bench's rows.
  rows=$(for ((i = 0; i < repeat; i++)); do $bin/netlink-bench "$n" | grep "^| $n |"; done)
  lib[$n]=$(echo "$rows" | awk -F'|' '{print $4}' | tr -d ' s' | median)
  ours[$n]=$(echo "$rows" | awk -F'|' '{print $7}' | tr -d ' s' | median)
  rb[$n]=$(echo "$rows" | awk -F'|' '{print $10}' | awk '{print $1}' | median)
  ip netns add "$ns"; ip netns exec "$ns" nft -f "$work/ours.nft"
  lst[$n]=$(for ((i = 0; i < repeat; i++)); do
    t0=$(date +%s.%N); ip netns exec "$ns" nft list table ip nfcompile >/dev/null; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l | xargs printf '%.3f\n'
  done | median)
  ip netns del "$ns"

  if [ -n "$prev_n" ] && too_slow "$prev_n" "$prev_kn" "$n"; then kn[$n]="skipped"; prev_kn=stopped; else kn[$n]=$(timed_median nft -f "$work/kube.nft"); prev_kn=${kn[$n]}; fi
  if [ -n "$prev_n" ] && too_slow "$prev_n" "$prev_ilr" "$n"; then ilr[$n]="skipped"; prev_ilr=stopped; else ilr[$n]=$(timed_median sh -c "iptables-legacy-restore < $work/kube.iptables"); prev_ilr=${ilr[$n]}; fi
  if [ -n "$prev_n" ] && too_slow "$prev_n" "$prev_inr" "$n"; then inr[$n]="skipped"; prev_inr=stopped; else inr[$n]=$(timed_median sh -c "iptables-nft-restore < $work/kube.iptables"); prev_inr=${inr[$n]}; fi
  prev_n=$n
done

echo "== incremental (sync-bench $sync_size)" >&2
sync=$($bin/sync-bench "$sync_size" | grep "one endpoint" || true)
echo "== datapath (datapath-bench ${datapath_sizes[*]})" >&2
datapath=$($bin/datapath-bench 3 "${datapath_sizes[@]}")

cell() { # value, nfcompile library time → "v s (r×)"
  case "$1" in
    skipped) echo "not run (extrapolated > $((4 * limit)) s)";;
    stopped) echo "> ${limit} s (stopped)";;
    *) echo "$1 s ($(ratio "$1" "$2")×)";;
  esac
}
mkdir -p benches/results
out="benches/results/scale-$(date +%Y-%m-%d).md"
{
  echo "# Scale benchmark: nfcompile and its peers ($(date +%Y-%m-%d); $(nproc) cores, Linux $(uname -r), $(nft --version | head -1), $(iptables-legacy --version))"
  echo
  echo "Command: \`sudo benches/scale.sh ${sizes[*]}\`. Services × 5 endpoints over 10 nodes; every load into a fresh network namespace, the median of $repeat runs (a load over 20 s: one run)."
  echo "Ratios: time ÷ nfcompile's library apply (what an embedding proxy pays per full sync)."
  echo
  echo "| services | nfcompile library apply | nfcompile apply (CLI, incl. start-up and JSON) | nft -f of nfcompile's script | kube-proxy nftables layout, nft -f | kube-proxy iptables rules, iptables-legacy-restore | same, iptables-nft-restore | readback (netlink) | nft list table |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for n in "${sizes[@]}"; do
    l=${lib[$n]}
    echo "| $n | ${l} s | $(cell "${cli[$n]}" "$l") | $(cell "${ours[$n]}" "$l") | $(cell "${kn[$n]}" "$l") | $(cell "${ilr[$n]}" "$l") | $(cell "${inr[$n]}" "$l") | ${rb[$n]} s | $(cell "${lst[$n]}" "${rb[$n]}") |"
  done
  echo
  echo "Incremental, $sync_size services, \`Syncer::update\` of one service (p50 / p99 over 100 changes):"
  echo
  echo '```text'
  echo "$sync" | sed -E 's/^ *cpu per change: [^;]*; //'
  echo '```'
  echo
  echo "Datapath: new TCP connections per second to the last service's cluster IP (client, node, server namespaces):"
  echo
  echo "$datapath"
} > "$out"
cat "$out"
echo "written to $out"
