#!/usr/bin/env bash
# Kernel matrix: the project's kernel test binaries against Debian's own kernels, booted with
# virtme-ng under qemu's software emulation, and against the host kernel directly.
#
#   bash scripts/kernel-matrix.sh [KERNEL…]      (as root; default: host 6.1 6.12)
#
# KERNEL is one of
#   host   the running kernel, no VM: the binaries run right here
#   6.1    Debian 12's kernel: the newest linux-image-6.1.0-NN-amd64 the mirror has
#   6.12   the 6.12 LTS of bookworm-security: what meta-package linux-image-6.12-amd64 depends on
#   linux-image-…-amd64   any other Debian kernel package by name (say, an older 6.12 to bisect)
#
# What it does
#   1. Installs what is missing, each once: from Debian (one apt-get update, then
#      apt-get install --no-install-recommends) qemu-system-x86, udev (virtme-ng's init needs
#      udevd to name the virtio-serial ports that carry the guest's output and exit code), kmod
#      (depmod, modprobe), busybox-static (virtme-ng's initramfs), nftables, iproute2, python3,
#      and the -dev packages the workspace builds with; from PyPI virtme-ng (pinned) into a venv
#      of its own in the cache folder, so nothing is installed into the system's Python.
#   2. Fetches each kernel with `apt-get download` and unpacks it with `dpkg-deb -x` into
#      /var/lib/nfcompile-kernels/PACKAGE_VERSION (boot/vmlinuz-*, lib/modules/*, depmod run
#      there). Nothing goes to the host's /boot or /lib/modules, no package is installed, so no
#      bootloader, initramfs-tools or postinst hook ever runs. (Not /var/cache: virtme-ng's
#      init mounts an empty tmpfs over /var/cache, /var/tmp and /var/log in the guest.)
#      virtme-ng finds the modules by itself: given a vmlinuz whose folder's ../lib/modules/KVER
#      exists, it puts that tree at the guest's /lib/modules/KVER (a tmpfs with a symlink), so
#      nf_tables, nft_*, nf_nat, nf_conntrack, veth, bridge, dummy… load on demand.
#   3. Builds the test binaries once (`cargo test --workspace --no-run`, the same profile as
#      scripts/test.sh, so CI reuses that build) and copies the ones it runs to
#      target/kernel-matrix/bin, so a concurrent rebuild cannot swap them mid-run.
#   4. Boots one VM per kernel: vng --run VMLINUZ --disable-kvm --force-9p --cpus 1 --memory 3G
#      --append mitigations=off --rwdir=RESULTS --exec scripts/kernel-matrix/run-suites.sh.
#      The guest's root is the host's own root filesystem, read-only over 9p (with tmpfs overlays
#      where it must write), so the binaries, the nfcompile CLI they call (CARGO_BIN_EXE_nfcompile),
#      the fixtures, nft, ip and python3 are the host's. RESULTS (target/kernel-matrix/KERNEL) is
#      the one folder shared read-write. Inside, each binary runs as root with CI=true (a missing
#      prerequisite fails instead of skipping) from its crate's folder, as cargo test does.
#      /dev/kvm cannot boot a stock kernel on these machines, hence --disable-kvm (TCG);
#      --force-9p because bookworm's qemu only has the old C virtiofsd, which vng cannot start.
#      The VMs run side by side (KERNEL_MATRIX_JOBS, default 2), one vCPU each: the tests are
#      mostly serial, so two one-CPU VMs on the two cores finish in the time of one.
#   5. Prints every binary's output as it runs (VM lines prefixed with [KERNEL]), then a summary
#      table kernel × binary → passed / failed / seconds, the failed tests with their first error
#      line, and exits non-zero if any test failed, any binary did not finish, or a VM did not boot.
#
# What runs where, and why
#   Software emulation is 30-300x slower than the host on this workload: every process start
#   (nft, ip, python3) costs ~0.1-1 s, and nft listing big rulesets is the worst case. Measured on
#   a 2-core machine, one vCPU per VM, two VMs side by side (guest seconds, 6.1 / 6.12):
#     netlink kernel.rs + cleanup.rs  ~320 s without generated_clusters_list_exactly_like_nft_f,
#                             which alone takes > 25 min (nft listing 1,700-service rulesets)
#     kernel_load.rs          ~160 s without a_text_transaction_turns_one_ruleset_into_the_other
#                             (685 s, nearly all of it nft in userspace)
#     cli apply.rs 53 s, ipv6_affinity.rs 45-58 s, packets.rs + udp.rs ~450 s, conformance.rs 160-180 s,
#     kube_proxy.rs 20 s without the 202-flow real-packet run (885 s), trace_kernel.rs 150 s
#   So on the emulated kernels the matrix runs what depends on the kernel version (netlink
#   messages, set and expression support, what the kernel refuses, real packets through the
#   rules) and leaves out the three tests whose cost is userspace, which the host column (or
#   scripts/test.sh) runs in full:
#     host   every suite, every test
#     6.1, 6.12   the suites and --skip lists of VM_SUITES below
#   Budget, measured (bash .ci/run in a fresh clone, 2026-12-02, twice): the two VMs side by
#   side 15-18 minutes (860-1,094 s each, 39 tests each), the host's scripts/test.sh 4 minutes,
#   20-23 minutes in all; a machine without qemu, virtme-ng and the kernel packages adds ~3
#   minutes. CI's limit is 90.

# Environment knobs
#   NFCOMPILE_KERNEL_CACHE   where kernels and the virtme-ng venv live (/var/lib/nfcompile-kernels)
#   KERNEL_MATRIX_OUT        results and logs (target/kernel-matrix)
#   KERNEL_MATRIX_JOBS       VMs at once (2)
#   KERNEL_MATRIX_VM_CPUS    vCPUs per VM (1); KERNEL_MATRIX_VM_MEMORY (3G)
#   KERNEL_MATRIX_VM_TIMEOUT seconds before a whole VM is killed (3600)
#   KERNEL_MATRIX_FULL=1     run every suite and test in the VMs too (hours, not for CI)
#   KERNEL_MATRIX_SUITES     only these suites (source files, space-separated), e.g. to run an
#                            older commit's tests: copy this script and its folder into a
#                            worktree of that commit and run it there
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

VIRTME_NG_VERSION=1.42
CACHE=${NFCOMPILE_KERNEL_CACHE:-/var/lib/nfcompile-kernels}
OUT=${KERNEL_MATRIX_OUT:-$REPO/target/kernel-matrix}
JOBS=${KERNEL_MATRIX_JOBS:-2}
VM_CPUS=${KERNEL_MATRIX_VM_CPUS:-1}
VM_MEMORY=${KERNEL_MATRIX_VM_MEMORY:-3G}
VM_TIMEOUT=${KERNEL_MATRIX_VM_TIMEOUT:-3600}
FULL=${KERNEL_MATRIX_FULL:-0}

# Every kernel test binary, by source file; a file that does not exist (yet) is left out.
SUITES=(
  nfcompile-netlink/tests/kernel.rs
  nfcompile-netlink/tests/cleanup.rs
  nfcompile/tests/kernel_load.rs
  nfcompile-cli/tests/apply.rs
  nfcompile-cli/tests/ipv6_affinity.rs
  nfcompile-cli/tests/packets.rs
  nfcompile-cli/tests/udp.rs
  nfcompile-cli/tests/conformance.rs
  nfcompile-cli/tests/kube_proxy.rs
  nfcompile-cli/tests/trace_kernel.rs
)
# What the emulated kernels run: source file → libtest arguments ("" = every test). A suite not
# listed here runs on the host only. Timeouts per binary: TIMEOUT_HOST, TIMEOUT_VM (seconds).
declare -A VM_SUITES=(
  [nfcompile-netlink/tests/kernel.rs]="--skip generated_clusters_list_exactly_like_nft_f"
  [nfcompile-netlink/tests/cleanup.rs]=""
  [nfcompile/tests/kernel_load.rs]="--skip a_text_transaction_turns_one_ruleset_into_the_other"
  [nfcompile-cli/tests/apply.rs]=""
  [nfcompile-cli/tests/ipv6_affinity.rs]=""
  [nfcompile-cli/tests/packets.rs]=""
  [nfcompile-cli/tests/udp.rs]=""
  [nfcompile-cli/tests/conformance.rs]=""
  [nfcompile-cli/tests/kube_proxy.rs]="--skip every_test_function_and_outcome_with_real_packets"
  [nfcompile-cli/tests/trace_kernel.rs]=""
)
if [ -n "${KERNEL_MATRIX_SUITES:-}" ]; then
  read -r -a SUITES <<< "$KERNEL_MATRIX_SUITES"
fi
TIMEOUT_HOST=900
TIMEOUT_VM=2400

log() { printf 'kernel-matrix: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- host tools ----------------

APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return
  log "apt-get update"
  apt-get update -qq || log "warning: apt-get update reported errors (going on with the lists it has)"
  APT_UPDATED=1
}

apt_install() {
  apt_update_once
  log "installing from Debian: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# Tools needed to build and run the tests on the host; with VMS=1 also to boot VMs.
install_tools() {
  local vms=$1 need=()
  command -v nft >/dev/null || need+=(nftables)
  command -v ip >/dev/null || need+=(iproute2)
  [ -x /usr/bin/python3 ] || command -v python3 >/dev/null || need+=(python3)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  pkg-config --exists libnftnl 2>/dev/null || need+=(libnftnl-dev)
  pkg-config --exists libmnl 2>/dev/null || need+=(libmnl-dev)
  if [ "$vms" = 1 ]; then
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    [ -x /lib/systemd/systemd-udevd ] || [ -x /usr/lib/systemd/systemd-udevd ] || need+=(udev)
    command -v depmod >/dev/null || need+=(kmod)
    command -v busybox >/dev/null || need+=(busybox-static)
    command -v file >/dev/null || need+=(file)
  fi
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  [ "$vms" = 1 ] && install_virtme_ng
  return 0
}

VENV=$CACHE/virtme-ng-$VIRTME_NG_VERSION
install_virtme_ng() {
  if [ ! -x "$VENV/bin/vng" ]; then
    log "installing virtme-ng $VIRTME_NG_VERSION from PyPI into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    local py=python3
    if ! $py -m venv --help >/dev/null 2>&1; then apt_install python3-venv; py=/usr/bin/python3; fi
    $py -m venv "$VENV" || { apt_install python3-venv; /usr/bin/python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
  fi
  export PATH="$VENV/bin:$PATH" # vng starts virtme-run by name
}

# ---------------------------------------------------------------- kernels -------------------

# Debian package name of a KERNEL argument.
kernel_package() {
  case "$1" in
    6.1)
      apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n1 ;;
    6.12)
      apt-cache depends linux-image-6.12-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.12\.[^ ]*-amd64\)$/\1/p' | head -n1 ;;
    linux-image-*) echo "$1" ;;
  esac
}

# Unpacks the kernel package PKG into the cache (once) and prints its vmlinuz.
fetch_kernel() {
  local pkg=$1 ver dir tmp kver
  ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
  [ -n "$ver" ] || die "Debian has no package $pkg"
  dir=$CACHE/${pkg}_$ver
  if [ ! -e "$dir/.complete" ]; then
    log "fetching $pkg $ver (apt-get download, dpkg-deb -x into $dir)"
    rm -rf "$dir" "$dir.partial"
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/download.XXXXXX")
    chmod 755 "$tmp"
    id _apt >/dev/null 2>&1 && chown _apt "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    dpkg-deb -x "$tmp"/*.deb "$dir.partial"
    rm -rf "$tmp"
    kver=$(ls "$dir.partial/lib/modules")
    depmod -b "$dir.partial" "$kver"
    touch "$dir.partial/.complete"
    mv "$dir.partial" "$dir"
  fi
  local images=("$dir"/boot/vmlinuz-*)
  [ -f "${images[0]}" ] || die "$pkg has no boot/vmlinuz-*"
  echo "${images[0]}"
}

# ---------------------------------------------------------------- test binaries -------------

# Fills BIN[source file] and DIR[source file] from one cargo build.
declare -A BIN=() DIR=()
build_tests() {
  log "building the test binaries (cargo test --workspace --no-run)"
  mkdir -p "$OUT/bin"
  local json=$OUT/build.json src exe dir
  cargo test --workspace --no-run --message-format=json-render-diagnostics > "$json"
  while IFS=$'\t' read -r src exe dir; do
    BIN[$src]=$exe DIR[$src]=$dir
  done < <(python3 - "$json" "$REPO" <<'EOF'
import json, os, sys
json_path, repo = sys.argv[1], sys.argv[2]
for line in open(json_path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        src = os.path.relpath(m["target"]["src_path"], repo)
        print(src, m["executable"], os.path.dirname(m["manifest_path"]), sep="\t")
EOF
  )
  local s
  for s in "${SUITES[@]}"; do
    [ -f "$s" ] || continue
    [ -n "${BIN[$s]:-}" ] || die "cargo built no test binary for $s"
    local copy
    copy=$OUT/bin/$(label "$s" | tr / _).test
    cp "${BIN[$s]}" "$copy"
    BIN[$s]=$copy
  done
}

# nfcompile-cli/tests/packets.rs → cli/packets
label() {
  local crate=${1%%/*} name=${1##*/}
  crate=${crate#nfcompile}; crate=${crate#-}
  echo "${crate:-core}/${name%.rs}"
}

# Writes the plan of one kernel column (see run-suites.sh).
write_plan() {
  local kernel=$1 plan=$2 s args timeout
  : > "$plan"
  for s in "${SUITES[@]}"; do
    [ -n "${BIN[$s]:-}" ] || continue
    if [ "$kernel" = host ] || [ "$FULL" = 1 ]; then
      args="" timeout=$TIMEOUT_HOST
      [ "$kernel" = host ] || timeout=$((4 * TIMEOUT_VM))
    elif [ -n "${VM_SUITES[$s]+set}" ]; then
      args=${VM_SUITES[$s]} timeout=$TIMEOUT_VM
    else
      continue
    fi
    # shellcheck disable=SC2086 # args are words
    printf '%s\t' "$(label "$s")" "${DIR[$s]}" "$timeout" "${BIN[$s]}" $args >> "$plan"
    printf '\n' >> "$plan"
  done
}

# ---------------------------------------------------------------- running -------------------

# Runs the host column in the foreground.
run_host() {
  local res=$OUT/host
  rm -rf "$res"; mkdir -p "$res"
  write_plan host "$res/plan"
  log "host kernel $(uname -r): running $(wc -l < "$res/plan") binaries directly"
  local start=$SECONDS
  bash "$REPO/scripts/kernel-matrix/run-suites.sh" "$res" || true
  echo $((SECONDS - start)) > "$res/wall"
}

# Boots KERNEL's VM and runs its column; output prefixed with [KERNEL].
run_vm() {
  local kernel=$1 vmlinuz=$2 res=$OUT/$1 start=$SECONDS rc=0
  rm -rf "$res"; mkdir -p "$res"
  write_plan "$kernel" "$res/plan"
  log "[$kernel] booting ${vmlinuz##*/} under software emulation ($VM_CPUS vCPU, $VM_MEMORY), $(wc -l < "$res/plan") binaries"
  {
    timeout -k 30 "$VM_TIMEOUT" vng --run "$vmlinuz" --disable-kvm --force-9p \
      --cpus "$VM_CPUS" --memory "$VM_MEMORY" --append "mitigations=off" \
      --name "nfc-$kernel" --rwdir="$res" --cwd "$REPO" \
      --exec "bash $REPO/scripts/kernel-matrix/run-suites.sh $res" \
      < /dev/null && rc=0 || rc=$?
    echo "$rc" > "$res/vng-exit"
  } 2>&1 | sed -u "s/^/[$kernel] /" | tee "$res/console.log" || true
  rc=$(cat "$res/vng-exit" 2>/dev/null || echo '?')
  echo $((SECONDS - start)) > "$res/wall"
  log "[$kernel] VM exited ($rc) after $((SECONDS - start))s"
}

# ---------------------------------------------------------------- summary -------------------

# "  test_name: first line of its panic message" for each failed test in a libtest log.
failures_of() {
  awk '
    /^---- .* stdout ----$/ { t = $2; want = 0; next }
    t != "" && /panicked at/ { want = 1; next }
    want && NF { sub(/^[ \t]+/, ""); msg[t] = substr($0, 1, 220); want = 0; t = "" }
    /^test .* \.\.\. FAILED$/ { failed[++n] = $2 }
    END { for (i = 1; i <= n; i++) printf "      %s: %s\n", failed[i], (failed[i] in msg ? msg[failed[i]] : "(no panic message; see the log)") }
  ' "$1"
}

summarize() {
  local bad=0 total_pass=0 total_fail=0 kernel res label rc p f g secs
  echo
  echo "================================ kernel matrix ================================"
  printf '%-24s %-20s %7s %7s %8s %8s  %s\n' KERNEL BINARY PASSED FAILED IGNORED SECONDS STATUS
  for kernel in "$@"; do
    res=$OUT/$kernel
    local kname
    kname=$(cut -d, -f1 "$res/started" 2>/dev/null | sed 's/^kernel //')
    kname="$kernel${kname:+ ($kname)}"
    if [ ! -e "$res/started" ]; then
      printf '%-24s %-20s %7s %7s %8s %8s  %s\n' "$kname" '-' - - - "$(cat "$res/wall" 2>/dev/null || echo -)" \
        "VM DID NOT BOOT (vng exit $(cat "$res/vng-exit" 2>/dev/null || echo ?)); see $res/console.log"
      bad=1; continue
    fi
    while IFS=$'\t' read -r label _ _ _ _; do
      local line
      line=$(awk -F'\t' -v l="$label" '$1 == l' "$res/results.tsv")
      if [ -z "$line" ]; then
        printf '%-24s %-20s %7s %7s %8s %8s  %s\n' "$kname" "$label" - - - - "DID NOT RUN (VM died or timed out)"
        bad=1; continue
      fi
      IFS=$'\t' read -r label rc p f g secs <<< "$line"
      total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
      local status=ok
      if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMEOUT"; bad=1
      elif [ "$rc" != 0 ] || [ "$f" != 0 ]; then status="FAILED (exit $rc)"; bad=1
      elif [ "$p" = 0 ]; then status="ran no test"; bad=1
      fi
      printf '%-24s %-20s %7s %7s %8s %8s  %s\n' "$kname" "$label" "$p" "$f" "$g" "$secs" "$status"
      if [ "$status" != ok ]; then failures_of "$res/${label//\//_}.log"; fi
    done < "$res/plan"
    [ -e "$res/done" ] || { echo "      $kernel: the run did not reach its end (see $res/console.log)"; bad=1; }
    echo "      $kernel: wall time $(cat "$res/wall" 2>/dev/null || echo ?)s"
  done
  echo "logs: $OUT/KERNEL/BINARY.log; disk: $(du -sh "$CACHE" 2>/dev/null | cut -f1) in $CACHE"
  echo "kernel-matrix: $total_pass passed, $total_fail failed"
  return $bad
}

# ---------------------------------------------------------------- main ----------------------

main() {
  [ "$(id -u)" = 0 ] || die "run as root (the tests need CAP_NET_ADMIN; installing needs root)"
  local kernels=("$@") k vms=0
  [ ${#kernels[@]} -gt 0 ] || kernels=(host 6.1 6.12)
  for k in "${kernels[@]}"; do
    case "$k" in
      host) ;;
      6.1 | 6.12 | linux-image-*-amd64) vms=1 ;;
      *) die "unknown kernel '$k' (host, 6.1, 6.12 or a linux-image-…-amd64 package)" ;;
    esac
  done
  local t0=$SECONDS
  install_tools "$vms"
  declare -A VMLINUZ=()
  for k in "${kernels[@]}"; do
    [ "$k" = host ] && continue
    apt_update_once
    local pkg
    pkg=$(kernel_package "$k")
    [ -n "$pkg" ] || die "no Debian package found for kernel $k"
    VMLINUZ[$k]=$(fetch_kernel "$pkg")
  done
  mkdir -p "$OUT"
  build_tests
  log "setup took $((SECONDS - t0))s"

  for k in "${kernels[@]}"; do [ "$k" = host ] && run_host; done
  local running=0
  for k in "${kernels[@]}"; do
    [ "$k" = host ] && continue
    if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
    run_vm "$k" "${VMLINUZ[$k]}" &
    running=$((running + 1))
  done
  wait || true
  summarize "${kernels[@]}"
}

main "$@"
