/* Entries of the test guest.
 *
 * _start (the ELF entry, tern's path): tern starts us in 64-bit mode with
 * identity paging, interrupts off, RSI = boot_params (docs/vmm.md).
 *
 * pvh_start (the PVH entry, named by the XEN_ELFNOTE_PHYS32_ENTRY note
 * below; QEMU's -kernel uses it for an ELF that carries the note): 32-bit
 * protected mode, paging off, flat 4 GiB segments, EBX = hvm_start_info
 * (Xen's arch-x86/hvm/start_info.h). It maps the first 4 GiB identity with
 * 2 MiB pages (RAM, the LAPIC, and the PCI hole where BARs live), enters
 * long mode on its own GDT (code 0x10, data 0x18, as tern's) and joins the
 * 64-bit path.
 *
 * Both call guest_main(boot_params, start_info), the one not used 0, on our
 * own stack; it never returns. */
  .section .note.Xen, "a", @note
  .balign 4
  .long 4          /* n_namesz: "Xen\0" */
  .long 4          /* n_descsz */
  .long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
  .asciz "Xen"
  .long pvh_start

  .section .text.start, "ax"
  .code64
  .globl _start
_start:
  cli
  lea stack_top(%rip), %rsp
  mov %rsi, %rdi
  xor %esi, %esi
  call guest_main
1:
  hlt
  jmp 1b

  .code32
pvh_start:
  cli
  mov %ebx, %ebp                 /* start_info, kept across the switch */
  /* Four page directories of 512 2 MiB pages: 0..4 GiB, present + RW + PS. */
  mov $pvh_pd, %edi
  mov $0x83, %eax
  xor %edx, %edx
  mov $2048, %ecx
2:
  mov %eax, (%edi)
  mov %edx, 4(%edi)
  add $0x200000, %eax
  adc $0, %edx
  add $8, %edi
  loop 2b
  movl $pvh_pd + 0x0003, pvh_pdpt
  movl $pvh_pd + 0x1003, pvh_pdpt + 8
  movl $pvh_pd + 0x2003, pvh_pdpt + 16
  movl $pvh_pd + 0x3003, pvh_pdpt + 24
  movl $pvh_pdpt + 3, pvh_pml4
  mov $pvh_pml4, %eax
  mov %eax, %cr3
  mov %cr4, %eax
  or $0x20, %eax                 /* PAE */
  mov %eax, %cr4
  mov $0xc0000080, %ecx          /* EFER */
  rdmsr
  or $0x100, %eax                /* LME */
  wrmsr
  lgdt pvh_gdt_desc
  mov %cr0, %eax
  or $0x80000001, %eax           /* PG | PE */
  mov %eax, %cr0
  ljmp $0x10, $pvh_long

  .code64
pvh_long:
  mov $0x18, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  mov %eax, %fs
  mov %eax, %gs
  lea stack_top(%rip), %rsp
  xor %edi, %edi
  mov %ebp, %esi                 /* zero-extends: the upper halves are undefined after the switch */
  call guest_main
3:
  hlt
  jmp 3b

  .section .rodata
  .balign 8
pvh_gdt:
  .quad 0
  .quad 0
  .quad 0x00af9a000000ffff       /* 0x10: 64-bit code */
  .quad 0x00cf92000000ffff       /* 0x18: flat data, 4 GiB limit */
pvh_gdt_desc:
  .word pvh_gdt_desc - pvh_gdt - 1
  .long pvh_gdt

  .bss
  .balign 4096
pvh_pml4:
  .skip 4096
pvh_pdpt:
  .skip 4096
pvh_pd:
  .skip 4 * 4096
  .balign 16
stack:
  .skip 32768
stack_top:
  .section .note.GNU-stack, "", @progbits
