/* Entry of the test guest. tern starts us in 64-bit mode with identity
 * paging, interrupts off, RSI = boot_params (docs/vmm.md). Switch to our
 * own stack and call guest_main(boot_params); it never returns. */
  .section .text.start, "ax"
  .globl _start
_start:
  cli
  lea stack_top(%rip), %rsp
  mov %rsi, %rdi
  call guest_main
1:
  hlt
  jmp 1b

  .bss
  .balign 16
stack:
  .skip 32768
stack_top:
  .section .note.GNU-stack, "", @progbits
