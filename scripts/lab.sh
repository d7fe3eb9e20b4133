#!/usr/bin/env bash
# The lab: a real KVM on any x86-64 Debian host, with or without a usable
# /dev/kvm of its own. It boots Debian's cloud kernel under QEMU's TCG with
# `-cpu max` (which emulates AMD SVM with nested paging), loads kvm-amd
# there, and runs one command in that outer VM ("L1"), where /dev/kvm
# behaves like an AMD host's. Its output streams to stdout and its exit
# status becomes this script's.
#
#   scripts/lab.sh [-c CPUS] [-m MEM] [-t SECONDS] [-s SECONDS] [-a N] [-b BUILD_DIR] -- CMD [ARG...]
#
#   -c CPUS     L1's CPUs (default: the host's, at most 4)
#   -m MEM      L1's memory (default 6G)
#   -t SECONDS  ends L1 after this long (default 3600); status 124
#   -s SECONDS  ends L1 when its console has been silent this long (default
#               0: never); status 124
#   -a N        runs L1 up to N times while it fails on its own (124, 125),
#               each on a fresh disk (default 1); the command's own failure
#               is never retried
#   -b DIR      the build directory to carry (default build)
#   -k          when every attempt failed on the lab's own (124, 125),
#               exit 77 instead, which ctest reports as a skip
#               (SKIP_RETURN_CODE): L1 under TCG freezes at times, for
#               QEMU's own guests too, and that says nothing of tern
#
# What L1 sees: Debian's cloud kernel, a busybox (amd64) user space, and one
# ext4 disk that holds, at their host paths, this source tree (without .git),
# the build directory's programs, test binaries, CTest files and guest
# images (debug info stripped), and the host programs the tests call (ctest,
# qemu-img, qemu-io, curl, bash, e2fsprogs) with their shared libraries. CMD
# runs there from the current directory with TMPDIR on that disk (ext4, so
# O_DIRECT works). The command's files do not come back: check inside L1.
#
# Exit status: CMD's status; 124 when L1 ran past -t or was silent past
# -s; 125 when L1 ended without reporting CMD's status (its console says
# why). A silent L1 is named before it is stopped: "L1 CPU at RIP ...
# (symbol)" for each of its CPUs, from QEMU's monitor and L1's kallsyms.
#
# Environment: TERN_LAB_CPU (L1's CPU model), TERN_LAB_ACCEL (QEMU's
# accelerator options), TERN_LAB_QEMU (another QEMU binary for L1),
# TERN_LAB_KVM_AMD (kvm-amd's parameters in L1, e.g. "npt=0").
#
# Cached in ${XDG_CACHE_HOME:-~/.cache}/tern-guest/lab: L1's initramfs,
# rebuilt when the kernel package, the host's busybox or this script change.
# The disk is made anew for every run (seconds). The lab is test
# infrastructure; tern does not depend on it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)

cpus=$(nproc); [ "$cpus" -gt 4 ] && cpus=4
# xsave=off: under TCG, the XSETBV of a guest of the inner KVM never reaches
# that KVM (no SVM intercept), so KVM reports XSAVE sizes for an XCR0 the
# guest did not set and every Linux guest there warns "XSAVE consistency
# problem" (QEMU's own guests in L1 as much as tern's); without XSAVE in L1
# no guest is offered it. QEMU still lists AVX, AVX2, FMA, F16C and VAES
# then, a CPU no vendor makes: tern drops features whose prerequisites are
# missing (arch/x86_64/cpu_setup.h), or Debian's aesni_intel would take #UD
# in its AVX code. TERN_LAB_CPU overrides the model.
cpu_model=${TERN_LAB_CPU:-max,xsave=off}
# TERN_LAB_ACCEL overrides QEMU's accelerator options (one TCG thread per
# L1 CPU by default).
accel=${TERN_LAB_ACCEL:-tcg,thread=multi}
# TERN_LAB_QEMU names another QEMU for L1 (a binary; its firmware is looked
# for in ../share/qemu and ../share/seabios beside it).
l1_qemu=${TERN_LAB_QEMU:-qemu-system-x86_64}
# TERN_LAB_KVM_AMD: kvm-amd's module parameters in L1, e.g. "npt=0".
l1_kvm_amd=
for p in ${TERN_LAB_KVM_AMD:-}; do l1_kvm_amd="$l1_kvm_amd kvm_amd.$p"; done
l1_qemu_data=()
if [ -n "${TERN_LAB_QEMU:-}" ]; then
  for d in "$(dirname "$TERN_LAB_QEMU")"/../share/qemu "$(dirname "$TERN_LAB_QEMU")"/../share/seabios; do
    [ -d "$d" ] && l1_qemu_data+=(-L "$d")
  done
fi
mem=6G
limit=3600
silence=0
attempts=1
build=build
skip_on_lab_failure=0
while getopts "c:m:t:s:a:b:k" o; do
  case "$o" in
    c) cpus=$OPTARG ;;
    m) mem=$OPTARG ;;
    t) limit=$OPTARG ;;
    s) silence=$OPTARG ;;
    a) attempts=$OPTARG ;;
    b) build=$OPTARG ;;
    k) skip_on_lab_failure=1 ;;
    *) echo "usage: $0 [-c CPUS] [-m MEM] [-t SECONDS] [-s SECONDS] [-a N] [-b BUILD_DIR] [-k] -- CMD [ARG...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "lab: no command given" >&2; exit 2; }
build=$(cd "$build" && pwd)

say() { echo "lab: $*" >&2; }
command -v "$l1_qemu" >/dev/null || { say "$l1_qemu missing (scripts/setup.sh installs it)"; exit 2; }
[ -x /bin/busybox ] || { say "busybox-static missing (scripts/setup.sh installs it)"; exit 2; }

# shellcheck source=lib/cloud-kernel.sh
. "$here/lib/cloud-kernel.sh"
cloud_kernel_fetch
vmlinuz="$kernel_dir/root/boot/vmlinuz-$kver"

# L1's initramfs: busybox, kvm-amd and the virtio disk modules, and an init
# that mounts the disk and switches to it.
l1_modules=(irqbypass kvm kvm-amd virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)
labcache="$tern_cache/lab"
mkdir -p "$labcache"
stamp=$(cat "$0" /bin/busybox | sha256sum | cut -c1-16)
l1_initramfs="$labcache/l1-$kver-$stamp.cpio.gz"
if [ ! -f "$l1_initramfs" ]; then
  say "building L1's initramfs ($kver)"
  stage=$(mktemp -d)
  mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
  cp /bin/busybox "$stage/bin/busybox"
  for a in sh mount insmod switch_root echo poweroff mkdir cat; do ln -s busybox "$stage/bin/$a"; done
  for m in "${l1_modules[@]}"; do
    if ! cloud_kernel_module "$m" "$stage/modules/$m.ko"; then
      cloud_kernel_builtin "$m" || { say "module $m not found in $kernel_pkg"; exit 1; }
    fi
  done
  cat > "$stage/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# kvm_amd.X=Y on the command line: parameters for kvm-amd (busybox's
# insmod does not read them from there itself).
kvm_amd_params=
for w in $(cat /proc/cmdline); do
  case "$w" in kvm_amd.*) kvm_amd_params="$kvm_amd_params ${w#kvm_amd.}" ;; esac
done
for m in irqbypass kvm kvm-amd virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  [ -f /modules/$m.ko ] || continue
  params=
  [ "$m" = kvm-amd ] && params=$kvm_amd_params
  # shellcheck disable=SC2086
  insmod /modules/$m.ko $params || echo "tern-lab: insmod $m failed"
done
[ -c /dev/kvm ] || echo "tern-lab: no /dev/kvm in L1"
if ! mount -t ext4 /dev/vda /newroot; then
  echo "tern-lab: cannot mount the lab disk"
  poweroff -f
fi
exec switch_root /newroot /lab/init
INIT
  chmod +x "$stage/init"
  (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$l1_initramfs.tmp"
  mv "$l1_initramfs.tmp" "$l1_initramfs"
  rm -rf "$stage"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-lab.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{lab,tmp,proc,sys,dev,etc,root}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

# carry FILE...: copies each file to its own path under the lab's root
# (through usr/ for /bin, /lib...: the host is usr-merged), with the shared
# libraries it needs.
carry_one() {
  local f=$1 dest
  dest="$root$(readlink -f "$f" | sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#')"
  [ -e "$dest" ] && return 0
  mkdir -p "$(dirname "$dest")"
  cp -L "$f" "$dest"
  # The same file under the name it was asked for, if that differs.
  local asked
  asked="$root$(echo "$f" | sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#')"
  if [ "$asked" != "$dest" ] && [ ! -e "$asked" ]; then mkdir -p "$(dirname "$asked")"; ln -s "${dest#"$root"}" "$asked" 2>/dev/null || cp -L "$f" "$asked"; fi
}
carry() {
  local f lib
  for f in "$@"; do
    carry_one "$f"
    while read -r lib; do carry_one "$lib"; done < <(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true)
  done
}
host_tools=(bash ctest qemu-img qemu-io qemu-system-x86_64 curl e2fsck debugfs mke2fs mkfs.ext4 resize2fs
  sha256sum cmp cp dd truncate stat timeout setarch fio date bc pkill)
for t in "${host_tools[@]}"; do
  p=$(command -v "$t" || true)
  [ -n "$p" ] && carry "$p"
done
# Data those programs read: ctest's modules, QEMU's firmware and modules.
for d in /usr/share/cmake-*/Modules /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu /usr/lib/x86_64-linux-gnu/qemu; do
  [ -d "$d" ] || continue
  mkdir -p "$root$d"
  cp -a "$d/." "$root$d/"
done
ln -sf ../lib64/ld-linux-x86-64.so.2 "$root/usr/lib/ld-linux-x86-64.so.2" 2>/dev/null || true
cp /bin/busybox "$root/usr/bin/busybox"
for a in $(/bin/busybox --list); do
  [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || ln -s busybox "$root/usr/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
echo tern-lab > "$root/etc/hostname"

# The source tree (without .git and build directories) and the build
# directory's files that tests use (no objects), at their host paths.
mkdir -p "$root$src"
tar -C "$src" --exclude=.git --exclude='./build*' -cf - . | tar -C "$root$src" -xf -
mkdir -p "$root$build"
tar -C "$build" --sparse --exclude=CMakeFiles --exclude='*.o' --exclude='*.a' --exclude=_CPack_Packages \
  --exclude='*.deb' -cf - . | tar -C "$root$build" -xf -
is_elf() { [ "$(head -c4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; }
while IFS= read -r -d '' f; do
  if is_elf "$f"; then strip --strip-debug "$f" 2>/dev/null || true; fi
done < <(find "$root$build" -type f -perm -u+x -size +1M -print0)
# The libraries of the build's own programs.
while IFS= read -r -d '' f; do
  is_elf "$f" || continue
  while read -r lib; do carry_one "$lib"; done < <(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true)
done < <(find "$build" -maxdepth 2 -type f -perm -u+x -print0)

# L1's second stage: runs CMD from the current directory and reports.
{
  echo '#!/bin/sh'
  echo 'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev'
  echo 'mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm'
  echo 'chmod 1777 /tmp; export TMPDIR=/tmp HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin'
  echo "echo \"tern-lab: L1 up: \$(uname -r), \$(nproc) CPUs, \$(grep MemTotal /proc/meminfo | tr -s ' ')\""
  echo '[ -c /dev/kvm ] && echo "tern-lab: /dev/kvm ready (kvm-amd, nested paging: $(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null))"'
  # L1's text symbols, for naming where a stalled L1's CPUs were (l1_where).
  echo "grep -i ' t ' /proc/kallsyms > /lab/kallsyms; sync"
  printf 'cd %q\n' "$PWD"
  # Environment the command needs (ctest's own TERN_* variables come from its files).
  for v in TERN_BUILD_DIR TERN_SOURCE_DIR GTEST_FILTER TERN_LAB_ROUNDS TERN_LAB_STALL; do
    [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  echo 'export TERN_LAB=1 TERN_GUEST_PREBUILT=1'
  # The stall reporter: a test process that runs too long gets its threads'
  # kernel stacks and KVM's exit rate printed (scripts/lib/lab-watch.sh).
  printf 'sh %q </dev/null &\n' "$src/scripts/lib/lab-watch.sh"
  printf '%q ' "$@"; echo
  echo 'rc=$?'
  echo 'sync'
  echo 'read -r up _ < /proc/uptime; echo "tern-lab: L1 uptime $up s"'
  echo 'echo "tern-lab: exit status $rc"'
  echo 'poweroff -f'
} > "$root/lab/init"
chmod +x "$root/lab/init"

used=$(du -sm "$root" | cut -f1)
disk="$work/lab.img"

# l1_where: where each of L1's CPUs is, from QEMU's monitor (a FIFO pair);
# l1_where_named, once L1 is stopped, names each RIP with L1's own symbols
# (the kallsyms its init saved on the lab disk).
l1_where() {
  exec 8<> "$work/monitor.out"
  echo "info registers -a" > "$work/monitor.in"
  timeout 3 cat <&8 > "$work/registers" || true
  exec 8<&-
}
l1_where_named() {
  local rip sym
  [ -s "$work/registers" ] || return 0
  debugfs -R "cat /lab/kallsyms" "$disk" > "$work/kallsyms" 2>/dev/null || true
  grep -o 'RIP=[0-9a-f]*' "$work/registers" | cut -d= -f2 | while read -r rip; do
    sym=$(awk -v r="$rip" '$1 <= r && $1 >= off && length($1) == length(r) { best = $3; off = $1 } END { print best }' "$work/kallsyms")
    say "L1 CPU at RIP $rip (${sym:-?})"
  done
}

# watch_console SECONDS: stops L1 (through QEMU's pid file) when its console
# has been silent that long, or when L1's kernel reports a CPU stuck (soft
# lockup) for that long, and leaves $work/stalled behind. The command's own
# output is the sign of life: ctest prints a line as each test ends, and
# every test inside has its own time limit, so a console silent for longer
# means L1 itself stopped making progress. A soft lockup repeats its line
# every half minute, so it would keep a silence watchdog quiet forever
# (seen with QEMU's own guest in L1 as much as with tern's).
watch_console() {
  local quiet=0 last=-1 size stuck
  while [ ! -e "$work/qemu.done" ]; do
    sleep 5
    size=$(stat -c %s "$work/console.log" 2>/dev/null || echo 0)
    if [ "$size" != "$last" ]; then last=$size quiet=0; else quiet=$((quiet + 5)); fi
    stuck=$( (grep -o 'soft lockup - CPU#[0-9]* stuck for [0-9]*s' "$work/console.log" 2>/dev/null || true) |
      tail -n1 | sed -n 's/.* stuck for \([0-9]*\)s$/\1/p')
    if [ "$quiet" -ge "$1" ] || [ "${stuck:-0}" -ge "$1" ]; then
      l1_where
      touch "$work/stalled"
      kill "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null || true
      return
    fi
  done
}

# run_l1: one run of L1 on a fresh lab disk; sets $run_status to the
# command's status, 124 (past -t, or silent past -s) or 125.
run_l1() {
  rm -f "$disk" "$work/stalled" "$work/qemu.done" "$work/qemu.pid" "$work/console.log" "$work"/monitor.* "$work/registers"
  mkfifo "$work/monitor.in" "$work/monitor.out"
  truncate -s $((used + 8192))M "$disk"
  mkfs.ext4 -q -F -d "$root" -E root_owner=0:0 -O ^has_journal "$disk"
  say "L1: $cpus CPUs, $mem; disk ${used} MiB used; running: $*"
  local started=$SECONDS watcher= qemu_rc
  if [ "$silence" -gt 0 ]; then watch_console "$silence" & watcher=$!; fi
  # stdin from /dev/null: a console reader must not wait on the caller's terminal.
  set +e
  timeout --foreground -k 10 "$limit" "$l1_qemu" "${l1_qemu_data[@]}" -accel "$accel" -cpu "$cpu_model" \
    -smp "$cpus" -m "$mem" -nodefaults -no-user-config -display none -no-reboot \
    -serial stdio -monitor "pipe:$work/monitor" -kernel "$vmlinuz" -initrd "$l1_initramfs" -pidfile "$work/qemu.pid" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check tsc=reliable nokaslr$l1_kvm_amd" \
    -drive "file=$disk,format=raw,if=virtio,cache=unsafe" < /dev/null 2> "$work/qemu.err" |
    tee "$work/console.log"
  qemu_rc=${PIPESTATUS[0]}
  set -e
  touch "$work/qemu.done"
  [ -n "$watcher" ] && wait "$watcher" 2>/dev/null
  if [ -e "$work/stalled" ]; then
    say "L1's console was silent, or one of its CPUs stuck, for ${silence}s after $((SECONDS - started)) s; stopped"
    l1_where_named
    run_status=124
    return
  fi
  if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    say "L1 ran past ${limit}s; stopped"
    run_status=124
    return
  fi
  say "L1 ran $((SECONDS - started)) s (host time)"
  run_status=$(tr -d '\r' < "$work/console.log" | sed -n 's/^.*tern-lab: exit status \([0-9]*\)$/\1/p' | tail -n1)
  if [ -z "$run_status" ]; then
    say "L1 ended (qemu status $qemu_rc) without reporting the command's status"
    grep -v "TCG doesn't support requested feature" "$work/qemu.err" >&2 || true
    run_status=125
  fi
}

for attempt in $(seq 1 "$attempts"); do
  run_l1 "$@"
  # Only the lab's own failures (124, 125) are retried, never the command's.
  if [ "$run_status" -ne 124 ] && [ "$run_status" -ne 125 ]; then break; fi
  [ "$attempt" -lt "$attempts" ] && say "attempt $attempt of $attempts failed (status $run_status); starting L1 again"
done
# A failing command's output can run to thousands of lines (each failing
# Linux test prints its guest's console), and CI logs keep only the head and
# the tail: end with a digest of what failed, one line each.
if [ "$run_status" -ne 0 ] && [ -s "$work/console.log" ]; then
  say "digest of the failures above:"
  tr -d '\r' < "$work/console.log" |
    grep -E '\*\*\*(Failed|Timeout|Exception)|tern: vCPU|tern: .*(failed|error)|: Failure$|missing kernel line|kernel panic|Kernel panic|BUG:|soft lockup|stall report' |
    grep -v '^tern-lab:    ' | cut -c1-200 | tail -n 40 | sed 's/^/lab:   /' >&2 || true
fi
if [ "$skip_on_lab_failure" = 1 ] && { [ "$run_status" -eq 124 ] || [ "$run_status" -eq 125 ]; }; then
  say "every attempt ($attempts) failed on the lab's own (status $run_status): the command did not run to its end; status 77 (skipped)"
  exit 77
fi
exit "$run_status"
