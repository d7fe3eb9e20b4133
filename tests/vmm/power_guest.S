/* power_guest: the smallest ELF64 kernel for tern's KVM tests. Entered in
 * 64-bit mode with RSI = boot_params (docs/vmm.md), it prints
 * "power-guest: cmdline=<command line> e820=<entries>" on COM1 and then
 * ends the VM the way its command line's first word says:
 *   "off"   ACPI S5: 0x34 to the sleep control port 0x600 (exit 0)
 *   "acpi"  ACPI reset register: 1 to port 0x602 (exit 2)
 *   "kbd"   i8042 reset: 0xfe to port 0x64 (exit 2)
 *   "fault" a triple fault: ud2 with no IDT (exit 2)
 *   "xit"   status 7 to the exit device, port 0x501 (exit 32 + 7 = 39)
 *   "hang"  hlt with interrupts off, until the VMM is killed
 *   "mmio"  jumps into unbacked MMIO space: KVM cannot fetch or emulate
 *           code there, an internal error (exit 3, registers on stderr)
 *   "spam"  4096 lines of 64 bytes (256 KiB, four pipes' worth) on COM1,
 *           then ACPI S5 (exit 0): for console readers that go or stall */
  .section .text.start, "ax"
  .globl _start
_start:
  cli
  mov %rsi, %rbx                 /* boot_params */
  lea banner(%rip), %rdi
  call puts
  mov 0x228(%rbx), %eax          /* hdr.cmd_line_ptr */
  mov %rax, %r12
  mov %rax, %rdi
  call puts
  lea e820(%rip), %rdi
  call puts
  movzbl 0x1e8(%rbx), %eax       /* e820_entries */
  add $'0', %al
  mov $0x3f8, %dx
  out %al, %dx
  mov $'\n', %al
  out %al, %dx

  movzbl (%r12), %eax
  cmp $'a', %al
  je acpi_reset
  cmp $'k', %al
  je kbd_reset
  cmp $'f', %al
  je fault
  cmp $'x', %al
  je guest_exit
  cmp $'h', %al
  je hang
  cmp $'m', %al
  je mmio
  cmp $'s', %al
  je spam
power_off:
  mov $0x600, %dx
  mov $0x34, %al
  out %al, %dx
  jmp hang
acpi_reset:
  mov $0x602, %dx
  mov $1, %al
  out %al, %dx
  jmp hang
kbd_reset:
  mov $0x64, %dx
  mov $0xfe, %al
  out %al, %dx
  jmp hang
guest_exit:
  mov $0x501, %dx
  mov $7, %al
  out %al, %dx
  jmp hang
fault:
  lidt null_idt(%rip)
  ud2
mmio:
  mov $0xd0000000, %rax
  jmp *%rax
spam:
  mov $4096, %r13d
3:
  lea spam_line(%rip), %rdi
  call puts
  dec %r13d
  jnz 3b
  jmp power_off
hang:
  hlt
  jmp hang

/* puts(rdi): NUL-terminated string to COM1. */
puts:
  mov $0x3f8, %dx
1:
  movb (%rdi), %al
  test %al, %al
  jz 2f
  out %al, %dx
  inc %rdi
  jmp 1b
2:
  ret

  .section .rodata
banner: .asciz "power-guest: cmdline="
e820:   .asciz " e820="
spam_line: .asciz "power-guest: spam spam spam spam spam spam spam spam spam spam.\n"
  .balign 8
null_idt: .word 0
          .quad 0
  .section .note.GNU-stack, "", @progbits
