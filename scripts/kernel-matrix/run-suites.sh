#!/usr/bin/env bash
# Runs the test binaries of one kernel-matrix column: inside a virtme-ng guest (as its --exec
# command), or directly on the host for the host kernel. Started by scripts/kernel-matrix.sh.
#
# usage: run-suites.sh RESULT_DIR
#   RESULT_DIR/plan         one suite a line, tab-separated: LABEL  WORKDIR  TIMEOUT_S  BINARY  [ARG…]
#   RESULT_DIR/results.tsv  written here, one line a suite: LABEL  RC  PASSED  FAILED  IGNORED  SECONDS
#   RESULT_DIR/LABEL.log    each suite's whole output (also printed on stdout as it runs)
#   RESULT_DIR/started, RESULT_DIR/done   markers, so the caller tells a VM that never ran this
#                                          script (or died in the middle) from a test failure
# Always exits 0 once it reached the end: results.tsv, not the exit code, says what failed.
set -uo pipefail

out=${1:?usage: run-suites.sh RESULT_DIR}
export CI=true # a missing prerequisite (nft, ip, python3, root) fails a kernel test instead of skipping it
export RUST_BACKTRACE=0
# The guest's PATH comes from virtme-ng's init; make sure the tools the tests call are found.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

: > "$out/results.tsv"
echo "kernel $(uname -r), $(nproc) CPU(s), $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)" > "$out/started"

while IFS=$'\t' read -r -a f; do
  [ ${#f[@]} -ge 4 ] || continue
  label=${f[0]} workdir=${f[1]} limit=${f[2]} bin=${f[3]}
  args=("${f[@]:4}")
  log="$out/${label//\//_}.log"
  echo "===== [$(uname -r)] $label: ${bin##*/} ${args[*]} (in $workdir, at most ${limit}s) ====="
  start=$(date +%s.%N)
  (cd "$workdir" && exec timeout -k 30 "$limit" "$bin" "${args[@]}") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  [ "$rc" = 124 ] && echo "!!!!!!!! $label: killed after ${limit}s (timeout) !!!!!!!!" | tee -a "$log"
  # libtest's closing line: "test result: ok. 16 passed; 0 failed; 0 ignored; ..."
  read -r passed failed ignored < <(awk '/^test result:/ {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i
      } } END { print p + 0, f + 0, g + 0 }' "$log")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rc" "$passed" "$failed" "$ignored" "$secs" >> "$out/results.tsv"
  echo "===== [$(uname -r)] $label: exit $rc, $passed passed, $failed failed, ${secs}s ====="
done < "$out/plan"

echo ok > "$out/done"
exit 0
