/* outb PORT VALUE: writes one byte to an I/O port, for the test guests'
 * /init (tests/linux/guest/init), which ends the VM through tern's exit
 * device (port 0x501) with its command's status. Debian's kernel has no
 * /dev/port and busybox has no port applet, so this is the one way in.
 *
 * Freestanding (no libc), built for i386 and x86_64 by scripts/make-guest.sh:
 * ioperm(2) for the one port, then the OUT instruction. Numbers are parsed
 * as C literals (0x501, 1281). Exit status 0 when the write returned (a
 * VMM without the device ignores it), 1 on a usage or ioperm error. */

typedef unsigned long ulong;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_ioperm 173
#define SYS_exit 60
static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}
#else
#define SYS_write 4
#define SYS_ioperm 101
#define SYS_exit 1
static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
  return r;
}
#endif

static ulong len(const char* s) {
  ulong n = 0;
  while (s[n]) ++n;
  return n;
}

static void say(const char* s) { sys3(SYS_write, 2, (long)s, (long)len(s)); }

static __attribute__((noreturn)) void quit(int code) {
  for (;;) sys3(SYS_exit, code, 0, 0);
}

/* A C literal: decimal, 0x hex or 0 octal; -1 when malformed or > limit. */
static long number(const char* s, long limit) {
  long base = 10, v = 0;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) base = 16, s += 2;
  else if (s[0] == '0' && s[1]) base = 8, s += 1;
  if (!*s) return -1;
  for (; *s; ++s) {
    long d;
    if (*s >= '0' && *s <= '9') d = *s - '0';
    else if (*s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
    else if (*s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
    else return -1;
    if (d >= base) return -1;
    v = v * base + d;
    if (v > limit) return -1;
  }
  return v;
}

__attribute__((used)) void outb_main(long argc, char** argv) {
  if (argc != 3) {
    say("usage: outb PORT VALUE\n");
    quit(1);
  }
  long port = number(argv[1], 0xffff), value = number(argv[2], 0xff);
  if (port < 0 || value < 0) {
    say("outb: PORT must be 0..0xffff and VALUE 0..0xff\n");
    quit(1);
  }
  if (sys3(SYS_ioperm, port, 1, 1) != 0) {
    say("outb: ioperm failed\n");
    quit(1);
  }
  __asm__ volatile("outb %b0, %w1" : : "a"(value), "Nd"(port));
  quit(0);
}

/* The entry: argc and argv on the initial stack. */
#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n\txor %rbp, %rbp\n\tmov (%rsp), %rdi\n\tlea 8(%rsp), %rsi\n"
        "\tand $-16, %rsp\n\tcall outb_main\n\thlt\n");
#else
__asm__(".globl _start\n_start:\n\txor %ebp, %ebp\n\tmov (%esp), %eax\n\tlea 4(%esp), %ecx\n"
        "\tand $-16, %esp\n\tsub $8, %esp\n\tpush %ecx\n\tpush %eax\n\tcall outb_main\n\thlt\n");
#endif
