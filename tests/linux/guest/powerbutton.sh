#!/bin/sh
# Waits for the host to press the ACPI power button through tern's API, as a
# guest with userspace power handling does: busybox acpid reads the button's
# input device (/dev/input/event*, from the kernel's button and evdev
# drivers) and runs the power-button action, which says so and powers off.
# Fails after 15 minutes without a press.
. /tests/lib.sh
[ -e /dev/input/event0 ] || fail "no input device (the kernel's button and evdev drivers)"
mkdir -p /tmp/acpi
# acpid runs an action relative to its config directory (-c).
printf '#!/bin/sh\necho "tern-test: power button pressed"\npoweroff -f\n' > /tmp/acpi/power
chmod +x /tmp/acpi/power
echo "PWRF power" > /tmp/acpi/acpid.conf
# -M names no file: acpid's built-in map, where KEY_POWER is PWRF.
acpid -d -c /tmp/acpi -a /tmp/acpi/acpid.conf -M /tmp/acpi/no-map -p /tmp/acpid.pid &
# acpid writes its pid file once it has opened every input device: a press
# before that would be lost.
n=0
while [ ! -s /tmp/acpid.pid ]; do
  n=$((n + 1))
  [ $n -lt 60 ] || fail "acpid did not start"
  pause 1
done
say "waiting for the power button"
n=0
while [ $n -lt 900 ]; do
  n=$((n + 1))
  pause 1
done
fail "no power button press in 900 s"
