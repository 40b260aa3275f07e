/* Multiboot (v1, a.out kludge) entry for kmain.c: 32-bit protected mode to
 * long mode with the first 1 GiB identity-mapped and the x87, SSE, AVX and
 * AVX-512 register state enabled (CR4.OSXSAVE, XCR0 = 0xE7). */
.set MB_MAGIC, 0x1BADB002
.set MB_FLAGS, 0x00010000
.section .multiboot, "a"
.align 4
mb_header:
  .long MB_MAGIC
  .long MB_FLAGS
  .long -(MB_MAGIC + MB_FLAGS)
  .long mb_header
  .long _load_start
  .long _load_end
  .long _bss_end
  .long _start32

.section .text32, "ax"
.code32
.globl _start32
_start32:
  cli
  mov $stack_top, %esp
  mov $pdpt, %eax
  or $0x3, %eax
  mov %eax, pml4
  mov $pd, %eax
  or $0x3, %eax
  mov %eax, pdpt
  mov $pd, %edi
  mov $0x83, %eax
  mov $512, %ecx
1:
  mov %eax, (%edi)
  movl $0, 4(%edi)
  add $0x200000, %eax
  add $8, %edi
  loop 1b
  mov %cr4, %eax
  or $((1 << 5) | (1 << 9) | (1 << 10) | (1 << 18)), %eax
  mov %eax, %cr4
  mov $pml4, %eax
  mov %eax, %cr3
  mov $0xC0000080, %ecx
  rdmsr
  or $(1 << 8), %eax
  wrmsr
  mov %cr0, %eax
  and $~(1 << 2), %eax
  or $((1 << 31) | (1 << 1) | 1), %eax
  mov %eax, %cr0
  lgdt gdt_ptr
  ljmp $0x08, $start64

.code64
start64:
  mov $0x10, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  mov $stack_top, %rsp
  mov $0xE7, %eax
  xor %edx, %edx
  xor %ecx, %ecx
  xsetbv
  call kmain
2:
  hlt
  jmp 2b

.section .rodata
.align 16
gdt:
  .quad 0
  .quad 0x00AF9A000000FFFF
  .quad 0x00CF92000000FFFF
gdt_end:
gdt_ptr:
  .word gdt_end - gdt - 1
  .long gdt

.section .bss
.align 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
stack: .skip 1048576
stack_top:

.section .note.GNU-stack, "", @progbits
