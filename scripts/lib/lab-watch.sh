#!/bin/sh
# Runs inside the lab's L1 (busybox sh), beside the command, as its stall
# reporter: a test process (anything but the shells, ctest and timeout
# around it) that has run longer than TERN_LAB_STALL seconds (default 150;
# tests in L1 take seconds to a few minutes) gets one report on the
# console: the state, wait channel and kernel stack of each of its threads,
# whether its vCPUs still enter and leave the guest (KVM's kvm_exit
# tracepoint, 2 s), the load and L1's kernel log tail. A stalled test is
# killed by its own time limit; the report is what is left to explain it.
limit=${TERN_LAB_STALL:-150}
hz=100
reported=" "
tracing=/sys/kernel/tracing
[ -d "$tracing/events" ] || mount -t tracefs tracefs "$tracing" 2>/dev/null
# A trace instance of its own: the top-level buffer stays whatever the
# command traces (bench/lab-boots.sh -T), neither cleared nor turned off.
watch_trace=$tracing/instances/tern-lab-watch
mkdir -p "$watch_trace" 2>/dev/null

report() {
  pid=$1 comm=$2 age=$3
  echo "tern-lab: stall report: pid $pid ($comm) has run ${age} s"
  echo "tern-lab:  $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-300)"
  for t in /proc/"$pid"/task/*; do
    tid=${t##*/}
    read -r _ tcomm state _ < "$t/stat" 2>/dev/null || continue
    echo "tern-lab:  thread $tid $tcomm state $state wchan $(cat "$t/wchan" 2>/dev/null)"
    sed 's/^/tern-lab:    /' "$t/stack" 2>/dev/null | head -n 12
  done
  if [ -f "$watch_trace/events/kvm/kvm_exit/enable" ]; then
    echo > "$watch_trace/trace"
    echo 1 > "$watch_trace/events/kvm/kvm_exit/enable"
    sleep 2
    echo 0 > "$watch_trace/events/kvm/kvm_exit/enable"
    echo "tern-lab:  kvm_exit in 2 s: $(grep -c kvm_exit "$watch_trace/trace")"
    grep kvm_exit "$watch_trace/trace" | tail -n 8 | sed 's/^/tern-lab:    /'
  fi
  echo "tern-lab:  load $(cat /proc/loadavg)"
  dmesg | tail -n 15 | sed 's/^/tern-lab:    /'
}

while sleep 10; do
  read -r up _ < /proc/uptime
  up=${up%.*}
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" -gt 1 ] || continue
    # Kernel threads have no executable.
    [ -e "$d/exe" ] || continue
    read -r _ comm _ < "$d/stat" 2>/dev/null || continue
    comm=${comm#(}; comm=${comm%)}
    case "$comm" in sh|bash|ctest|timeout|sleep|busybox|init|lab-watch.sh) continue ;; esac
    case "$reported" in *" $pid "*) continue ;; esac
    start=$(cut -d' ' -f22 "$d/stat" 2>/dev/null) || continue
    [ -n "$start" ] || continue
    age=$((up - start / hz))
    if [ "$age" -ge "$limit" ]; then
      reported="$reported$pid "
      report "$pid" "$comm" "$age"
    fi
  done
done
