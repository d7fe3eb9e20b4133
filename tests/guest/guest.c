/* tern-test-guest: a freestanding x86-64 guest that drives tern's virtio-blk
 * device end to end and reports one TAP-like line per check on COM1:
 * "ok N what" / "not ok N what". It powers off when every check passed and
 * resets the machine (tern exit status 2) when one failed.
 *
 * It finds the device by PCI enumeration (ports 0xcf8/0xcfc) and takes
 * MSI-X interrupts, or (transport=mmio) by probing tern's virtio-mmio window
 * for the magic value and takes the device's interrupt line through the
 * IOAPIC; either way it initializes it per virtio 1.x section 3.1.1, handles
 * interrupts through its own IDT and the LAPIC, and does real I/O against a
 * disk the host test prepared:
 * every 512-byte sector N holds 64 little-endian words, word k = N * 64 + k.
 *
 * Without "prepared" on the command line the guest first writes that pattern
 * to sectors 0-511 itself, so it also passes on a blank image.
 *
 * Entered by tern at the ELF entry (64-bit, boot_params) or by QEMU through
 * the PVH note (start.S; hvm_start_info): under QEMU (-M q35, virtio-blk-pci
 * with disable-legacy=on) power-off is ACPI S5 on the ICH9 PM block (0x604)
 * and reset goes through 0xcf9.
 *
 * Command line words: bench (only the throughput run: for
 * bench/guest-io.sh, under tern and QEMU alike), write (the throughput run
 * writes), depth=N (its requests in flight per queue, 1-32, default 8), no_cpu_checks (skip the emulation fallback checks), prepared (the host wrote the pattern), idle (after the checks, wait for configuration-change
 * interrupts and print "capacity N"), hostile (send malformed chains, expect
 * NEEDS_RESET, reset and recover), expect_ro, expect_queues=N, serial=STR,
 * reqs=N (requests of the throughput run), transport=pci|mmio|both (which
 * device to drive; both: the PCI disk, then the MMIO disk, each through
 * every check).
 *
 * Before the device checks it executes each instruction of tern's emulation
 * fallback table (vmm/emulation_fallback.h: int3, int n, clac/stac, fwait, lsl,
 * ldmxcsr, ldmxcsr raising #GP and #PF) and checks the architectural
 * result: on an emulated KVM these exit to tern, which completes them; on
 * hardware they run natively, with the same results.
 *
 * Runs under KVM's instruction emulator at a few MIPS, so it stays lean: no
 * floating point outside those checks, no xsave, no cmpxchg16b. */
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

/* ---- freestanding basics ---- */

void* memset(void* d, int c, size_t n) {
  u8* p = d;
  while (n--) *p++ = (u8)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  u8* p = d;
  const u8* q = s;
  while (n--) *p++ = *q++;
  return d;
}

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) {
  u32 v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline u8 mmio_r8(u64 a) { return *(volatile u8*)a; }
static inline u16 mmio_r16(u64 a) { return *(volatile u16*)a; }
static inline u32 mmio_r32(u64 a) { return *(volatile u32*)a; }
static inline void mmio_w8(u64 a, u8 v) { *(volatile u8*)a = v; }
static inline void mmio_w16(u64 a, u16 v) { *(volatile u16*)a = v; }
static inline void mmio_w32(u64 a, u32 v) { *(volatile u32*)a = v; }
static inline void mmio_w64(u64 a, u64 v) {  /* two halves, as Linux does */
  mmio_w32(a, (u32)v);
  mmio_w32(a + 4, (u32)(v >> 32));
}

/* ---- console ---- */

static void putc_(char c) { outb(0x3f8, (u8)c); }
static void puts_(const char* s) {
  while (*s) putc_(*s++);
}
static void putu(u64 v) {
  char b[24];
  int i = 0;
  do {
    b[i++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (i) putc_(b[--i]);
}
static void puthex(u64 v) {
  puts_("0x");
  for (int s = 60; s >= 0; s -= 4) {
    int d = (int)((v >> s) & 15);
    if (d || s == 0 || v >> s) putc_("0123456789abcdef"[d]);
  }
}

static unsigned checks, failures;
static void check(int ok, const char* what) {
  ++checks;
  if (!ok) {
    ++failures;
    puts_("not ");
  }
  puts_("ok ");
  putu(checks);
  putc_(' ');
  puts_(what);
  putc_('\n');
}

static int on_qemu; /* entered through the PVH note */
static void power_off(void) {
  if (on_qemu) {
    outw(0x604, 0x2000); /* ICH9 PM1a_CNT: SLP_EN, SLP_TYP 0 = S5 in QEMU's DSDT */
  } else {
    outb(0x600, 0x34); /* SLP_TYP 5 | SLP_EN */
  }
  for (;;) __asm__ volatile("cli; hlt");
}
static void reset_machine(void) {
  if (on_qemu) {
    outb(0xcf9, 0x06); /* hard reset */
  } else {
    outb(0x602, 1);
  }
  for (;;) __asm__ volatile("cli; hlt");
}

/* ---- command line ---- */

static const char* cmdline = "";
static int has_word(const char* w) {
  const char* p = cmdline;
  while (*p) {
    while (*p == ' ') ++p;
    const char* a = p;
    const char* b = w;
    while (*a && *a != ' ' && *b && *a == *b) ++a, ++b;
    if (!*b && (!*a || *a == ' ')) return 1;
    while (*p && *p != ' ') ++p;
  }
  return 0;
}
/* Value of "key=" (up to the next space) copied into out; 0 if absent. */
static int get_value(const char* key, char* out, int max) {
  const char* p = cmdline;
  while (*p) {
    while (*p == ' ') ++p;
    const char* a = p;
    const char* b = key;
    while (*a && *b && *a == *b) ++a, ++b;
    if (!*b && *a == '=') {
      ++a;
      int n = 0;
      while (*a && *a != ' ' && n < max - 1) out[n++] = *a++;
      out[n] = 0;
      return 1;
    }
    while (*p && *p != ' ') ++p;
  }
  return 0;
}
static u64 get_number(const char* key, u64 dflt) {
  char b[24];
  if (!get_value(key, b, sizeof b)) return dflt;
  u64 v = 0;
  for (char* p = b; *p >= '0' && *p <= '9'; ++p) v = v * 10 + (u64)(*p - '0');
  return v;
}

/* ---- interrupts: IDT, LAPIC, MSI-X ---- */

#define LAPIC 0xfee00000ull
#define VEC_CONFIG 0x40
#define VEC_QUEUE0 0x41
#define VEC_MMIO 0x48
#define IOAPIC 0xfec00000ull

struct idt_entry {
  u16 off_lo, sel;
  u8 ist, attr;
  u16 off_mid;
  u32 off_hi, zero;
} __attribute__((packed));
static struct idt_entry idt[256] __attribute__((aligned(16)));

static volatile u32 config_irqs;
static volatile u32 queue_irqs[2];

struct interrupt_frame;
static void eoi(void) { mmio_w32(LAPIC + 0xb0, 0); }
static u64 mmio_base; /* the virtio-mmio device in use, for its interrupt handler */

__attribute__((interrupt)) static void config_isr(struct interrupt_frame* f) {
  (void)f;
  config_irqs = config_irqs + 1;
  eoi();
}
__attribute__((interrupt)) static void queue0_isr(struct interrupt_frame* f) {
  (void)f;
  queue_irqs[0] = queue_irqs[0] + 1;
  eoi();
}
__attribute__((interrupt)) static void queue1_isr(struct interrupt_frame* f) {
  (void)f;
  queue_irqs[1] = queue_irqs[1] + 1;
  eoi();
}
/* virtio-mmio: one line for the whole device; InterruptStatus says why
 * (bit 0 used buffers on some queue, bit 1 configuration change). */
__attribute__((interrupt)) static void mmio_isr(struct interrupt_frame* f) {
  (void)f;
  u32 why = mmio_r32(mmio_base + 0x60);
  mmio_w32(mmio_base + 0x64, why);
  if (why & 2) config_irqs = config_irqs + 1;
  if (why & 1) {
    queue_irqs[0] = queue_irqs[0] + 1;
    queue_irqs[1] = queue_irqs[1] + 1;
  }
  eoi();
}

/* The frame the CPU pushes in 64-bit mode; handlers may move ip. */
struct cpu_frame {
  u64 ip, cs, flags, sp, ss;
};
static volatile u64 bp_ip, bp_count, gp_count, gp_error;
__attribute__((interrupt)) static void bp_isr(struct interrupt_frame* f) {
  bp_ip = ((struct cpu_frame*)f)->ip;
  bp_count = bp_count + 1;
}
static volatile u64 sw_ip, sw_count;
__attribute__((interrupt)) static void sw_isr(struct interrupt_frame* f) {
  sw_ip = ((struct cpu_frame*)f)->ip;
  sw_count = sw_count + 1;
}
/* #GP from the deliberate `ldmxcsr (%rax)` (0f ae 10): skip its 3 bytes. */
__attribute__((interrupt)) static void gp_isr(struct interrupt_frame* f, u64 error) {
  gp_error = error;
  gp_count = gp_count + 1;
  ((struct cpu_frame*)f)->ip += 3;
}

/* #PF from the deliberate `ldmxcsr (%rax)` at an unmapped address: skip its 3 bytes. */
static volatile u64 pf_count, pf_error, pf_cr2;
__attribute__((interrupt)) static void pf_isr(struct interrupt_frame* f, u64 error) {
  u64 cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  pf_cr2 = cr2;
  pf_error = error;
  pf_count = pf_count + 1;
  ((struct cpu_frame*)f)->ip += 3;
}

static void set_gate_raw(int vec, u64 a) {
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  idt[vec] = (struct idt_entry){(u16)a, cs, 0, 0x8e, (u16)(a >> 16), (u32)(a >> 32), 0};
}
static void set_gate(int vec, void (*fn)(struct interrupt_frame*)) { set_gate_raw(vec, (u64)fn); }

static void setup_interrupts(void) {
  set_gate(VEC_CONFIG, config_isr);
  set_gate(VEC_QUEUE0, queue0_isr);
  set_gate(VEC_QUEUE0 + 1, queue1_isr);
  set_gate(VEC_MMIO, mmio_isr);
  set_gate(3, bp_isr);
  set_gate(0x81, sw_isr);
  set_gate_raw(13, (u64)gp_isr);
  set_gate_raw(14, (u64)pf_isr);
  struct {
    u16 limit;
    u64 base;
  } __attribute__((packed)) idtr = {sizeof idt - 1, (u64)idt};
  __asm__ volatile("lidt %0" ::"m"(idtr));
  mmio_w32(LAPIC + 0x80, 0);      /* TPR: accept everything */
  mmio_w32(LAPIC + 0xf0, 0x1ff);  /* SVR: APIC software-enabled, spurious 0xff */
}

/* Sleeps until an interrupt arrives. Called with interrupts off, after the
 * caller checked its condition, so no wake-up is lost (sti's shadow covers
 * the hlt). */
static void wait_irq(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

/* ---- PCI ---- */

static u32 pci_read(u32 dev, u32 off) {
  outl(0xcf8, 0x80000000u | (dev << 11) | (off & 0xfc));
  return inl(0xcfc);
}
static void pci_write(u32 dev, u32 off, u32 v) {
  outl(0xcf8, 0x80000000u | (dev << 11) | (off & 0xfc));
  outl(0xcfc, v);
}

/* ---- virtio-blk ---- */

#define QSZ 128 /* room for MAX_SLOTS chains of 3 descriptors */
#define F_RO (1ull << 5)
#define F_BLK_SIZE (1ull << 6)
#define F_SEG_MAX (1ull << 2)
#define F_FLUSH (1ull << 9)
#define F_MQ (1ull << 12)
#define F_DISCARD (1ull << 13)
#define F_WRITE_ZEROES (1ull << 14)
#define F_INDIRECT (1ull << 28)
#define F_EVENT_IDX (1ull << 29)
#define F_VERSION_1 (1ull << 32)
#define D_NEXT 1
#define D_WRITE 2
#define D_INDIRECT 4
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2

struct vdesc {
  u64 addr;
  u32 len;
  u16 flags, next;
};
struct used_elem {
  u32 id, len;
};
/* One queue's rings (virtio 1.x 2.7): descriptor table, avail ring with
 * used_event, used ring with avail_event. */
struct qmem {
  struct vdesc desc[QSZ];
  volatile u16 avail_flags, avail_idx, avail_ring[QSZ], used_event;
  u16 pad;
  volatile u16 used_flags, used_idx;
  volatile struct used_elem used_ring[QSZ];
  volatile u16 avail_event;
} __attribute__((aligned(4096)));

struct blk_hdr {
  u32 type, reserved;
  u64 sector;
};
#define SLOTS 8 /* requests in flight per queue in the checks; slot s uses descriptors 3s..3s+2 */
#define MAX_SLOTS 32 /* the throughput run's depth=N at most */
struct queue {
  struct qmem* m;
  u64 notify;
  u16 next_avail, last_used;
  struct blk_hdr hdr[MAX_SLOTS];
  volatile u8 status[MAX_SLOTS];
  volatile u8 done[MAX_SLOTS];
  u32 used_len[MAX_SLOTS];
  struct vdesc indirect[MAX_SLOTS][4] __attribute__((aligned(16)));
};

static struct qmem qmem[2];
static struct queue queues[2];
static u8 data_buf[MAX_SLOTS * 2][4096] __attribute__((aligned(4096)));

static struct {
  int mmio; /* the virtio-mmio transport (else virtio-pci) */
  u64 base; /* virtio-mmio registers */
  u32 gsi;  /* virtio-mmio interrupt line */
  u32 pci;  /* bus 0 device number */
  u64 bars[6]; /* memory BARs (0 when absent); bar = bars[0] for the log */
  u64 bar, common, notify_base, isr, devcfg, msix_table;
  u32 notify_mult;
  u32 msix_cap;
  u64 features;
  int nqueues;
  u64 capacity;
} dev;

#define C_DFSEL 0x00
#define C_DF 0x04
#define C_GFSEL 0x08
#define C_GF 0x0c
#define C_MSIX 0x10
#define C_NUMQ 0x12
#define C_STATUS 0x14
#define C_GEN 0x15
#define C_QSEL 0x16
#define C_QSIZE 0x18
#define C_QMSIX 0x1a
#define C_QENABLE 0x1c
#define C_QNOFF 0x1e
#define C_QDESC 0x20
#define C_QDRIVER 0x28
#define C_QDEVICE 0x30

static int find_device(void) {
  for (u32 d = 0; d < 32; ++d) {
    u32 id = pci_read(d, 0);
    if (id != (0x1042u << 16 | 0x1af4u)) continue;
    dev.pci = d;
    /* tern puts every structure in BAR 0; QEMU splits them (MSI-X in
     * BAR 1, the virtio structures in BAR 4): each capability names its BAR. */
    for (u32 b = 0; b < 6; ++b) {
      u32 lo = pci_read(d, 0x10 + 4 * b);
      dev.bars[b] = 0;
      if (lo & 1) continue; /* I/O space */
      dev.bars[b] = lo & ~0xfull;
      if (((lo >> 1) & 3) == 2 && b < 5) {
        dev.bars[b] |= (u64)pci_read(d, 0x14 + 4 * b) << 32;
        ++b;
      }
    }
    dev.bar = dev.bars[0];
    pci_write(d, 0x04, pci_read(d, 0x04) | 0x6); /* memory space, bus master */
    for (u32 cap = pci_read(d, 0x34) & 0xfc; cap; cap = (pci_read(d, cap) >> 8) & 0xfc) {
      u32 w0 = pci_read(d, cap);
      if ((w0 & 0xff) == 0x11) {
        u32 table = pci_read(d, cap + 4);
        dev.msix_cap = cap;
        dev.msix_table = dev.bars[table & 7] + (table & ~7u);
      }
      if ((w0 & 0xff) != 0x09) continue;
      u32 type = (w0 >> 24) & 0xff;
      u64 off = dev.bars[pci_read(d, cap + 4) & 7] + pci_read(d, cap + 8);
      if (type == 1) dev.common = off;
      if (type == 2) {
        dev.notify_base = off;
        dev.notify_mult = pci_read(d, cap + 16);
      }
      if (type == 3) dev.isr = off;
      if (type == 4) dev.devcfg = off;
    }
    return 1;
  }
  return 0;
}

/* ---- virtio-mmio (4.2.2) ---- */

#define M_DFEAT 0x010
#define M_DFSEL 0x014
#define M_GFEAT 0x020
#define M_GFSEL 0x024
#define M_QSEL 0x030
#define M_QNUMMAX 0x034
#define M_QNUM 0x038
#define M_QREADY 0x044
#define M_QNOTIFY 0x050
#define M_STATUS 0x070
#define M_QDESC 0x080
#define M_QDRIVER 0x090
#define M_QDEVICE 0x0a0
#define M_GEN 0x0fc
#define M_CONFIG 0x100

/* tern's virtio-mmio window and the interrupt line of each slot
 * (arch/x86_64/layout.h: kVirtioMmioStart, kVirtioMmioIrqs). */
#define MMIO_WINDOW 0xe0100000ull
static const u8 mmio_irqs[16] = {5, 6, 7, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};

static int find_mmio_device(void) {
  for (u32 i = 0; i < 16; ++i) {
    u64 b = MMIO_WINDOW + 0x1000ull * i;
    if (mmio_r32(b) != 0x74726976 || mmio_r32(b + 4) != 2 || mmio_r32(b + 8) != 2) continue;
    dev.mmio = 1;
    dev.base = b;
    dev.gsi = mmio_irqs[i];
    dev.devcfg = b + M_CONFIG;
    mmio_base = b;
    return 1;
  }
  return 0;
}

static void ioapic_write(u32 reg, u32 v) {
  mmio_w32(IOAPIC, reg);
  mmio_w32(IOAPIC + 0x10, v);
}
/* The device's line: edge, active high, fixed delivery to this CPU. The
 * legacy PICs stay masked (KVM wires ISA lines to them too). */
static void route_mmio_irq(void) {
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  u32 dest = mmio_r32(LAPIC + 0x20) >> 24;
  ioapic_write(0x11 + 2 * dev.gsi, dest << 24);
  ioapic_write(0x10 + 2 * dev.gsi, VEC_MMIO);
}

static u8 status(void) {
  return dev.mmio ? (u8)mmio_r32(dev.base + M_STATUS) : mmio_r8(dev.common + C_STATUS);
}
static void set_status(u8 s) {
  if (dev.mmio) mmio_w32(dev.base + M_STATUS, s);
  else mmio_w8(dev.common + C_STATUS, s);
}
static u32 device_features(u32 sel) {
  mmio_w32(dev.mmio ? dev.base + M_DFSEL : dev.common + C_DFSEL, sel);
  return mmio_r32(dev.mmio ? dev.base + M_DFEAT : dev.common + C_DF);
}
static void driver_features(u32 sel, u32 v) {
  mmio_w32(dev.mmio ? dev.base + M_GFSEL : dev.common + C_GFSEL, sel);
  mmio_w32(dev.mmio ? dev.base + M_GFEAT : dev.common + C_GF, v);
}
static u8 config_generation(void) {
  return dev.mmio ? (u8)mmio_r32(dev.base + M_GEN) : mmio_r8(dev.common + C_GEN);
}

/* Queue set-up on virtio-mmio; 0 on success. */
static int mmio_setup_queue(int q, struct queue* Q) {
  u64 b = dev.base;
  mmio_w32(b + M_QSEL, (u32)q);
  if (mmio_r32(b + M_QREADY) != 0 || mmio_r32(b + M_QNUMMAX) < QSZ) return 3;
  mmio_w32(b + M_QNUM, QSZ);
  mmio_w64(b + M_QDESC, (u64)Q->m->desc);
  mmio_w64(b + M_QDRIVER, (u64)&Q->m->avail_flags);
  mmio_w64(b + M_QDEVICE, (u64)&Q->m->used_flags);
  Q->notify = b + M_QNOTIFY;
  mmio_w32(b + M_QREADY, 1);
  return mmio_r32(b + M_QREADY) == 1 ? 0 : 4;
}

/* 3.1.1 device initialization; returns 0 on success. */
static int dev_init(int quiet) {
  set_status(0);
  while (status() != 0) {
  }
  set_status(1);
  set_status(1 | 2);
  u64 f = device_features(0);
  f |= (u64)device_features(1) << 32;
  u64 want = F_VERSION_1 | F_RO | F_BLK_SIZE | F_SEG_MAX | F_FLUSH | F_MQ | F_DISCARD |
             F_WRITE_ZEROES | F_INDIRECT | F_EVENT_IDX;
  dev.features = f & want;
  driver_features(0, (u32)dev.features);
  driver_features(1, (u32)(dev.features >> 32));
  set_status(1 | 2 | 8);
  if (!(status() & 8)) return 1;
  if (!quiet) check((f & F_VERSION_1) != 0, "features negotiated (VERSION_1, FEATURES_OK)");

  if (dev.mmio) {
    /* 4.2.3.1: no queue count register; the device offers what it has
     * (QueueNumMax 0 past the last queue). */
    mmio_w32(dev.base + M_QSEL, 1);
    int two = (dev.features & F_MQ) && mmio_r32(dev.base + M_QNUMMAX) != 0;
    dev.nqueues = two ? 2 : 1;
    for (int q = 0; q < dev.nqueues; ++q) {
      memset(&qmem[q], 0, sizeof qmem[q]);
      memset(&queues[q], 0, sizeof queues[q]);
      queues[q].m = &qmem[q];
      int r = mmio_setup_queue(q, &queues[q]);
      if (r) return r;
    }
    set_status(1 | 2 | 8 | 4);
    dev.capacity = mmio_r32(dev.devcfg) | (u64)mmio_r32(dev.devcfg + 4) << 32;
    return (status() & 0x40) ? 5 : 0;
  }

  /* MSI-X: enable, program vector 0 (config) and 1.. (queues), unmask. */
  u32 dest = mmio_r32(LAPIC + 0x20) >> 24;
  pci_write(dev.pci, dev.msix_cap, pci_read(dev.pci, dev.msix_cap) | (0x8000u << 16));
  for (u32 v = 0; v < 3; ++v) {
    u64 e = dev.msix_table + 16 * v;
    mmio_w32(e, 0xfee00000u | (dest << 12));
    mmio_w32(e + 4, 0);
    mmio_w32(e + 8, VEC_CONFIG + v);
    mmio_w32(e + 12, 0);
  }
  mmio_w16(dev.common + C_MSIX, 0);
  if (mmio_r16(dev.common + C_MSIX) != 0) return 2;

  u16 nq = mmio_r16(dev.common + C_NUMQ);
  dev.nqueues = (dev.features & F_MQ) && nq >= 2 ? 2 : 1;
  for (int q = 0; q < dev.nqueues; ++q) {
    struct queue* Q = &queues[q];
    memset(&qmem[q], 0, sizeof qmem[q]);
    memset(Q, 0, sizeof *Q);
    Q->m = &qmem[q];
    mmio_w16(dev.common + C_QSEL, (u16)q);
    if (mmio_r16(dev.common + C_QSIZE) < QSZ) return 3;
    mmio_w16(dev.common + C_QSIZE, QSZ);
    mmio_w16(dev.common + C_QMSIX, (u16)(1 + q));
    if (mmio_r16(dev.common + C_QMSIX) != 1 + q) return 4;
    mmio_w64(dev.common + C_QDESC, (u64)Q->m->desc);
    mmio_w64(dev.common + C_QDRIVER, (u64)&Q->m->avail_flags);
    mmio_w64(dev.common + C_QDEVICE, (u64)&Q->m->used_flags);
    Q->notify = dev.notify_base + (u64)mmio_r16(dev.common + C_QNOFF) * dev.notify_mult;
    mmio_w16(dev.common + C_QENABLE, 1);
  }
  set_status(1 | 2 | 8 | 4);
  dev.capacity = mmio_r32(dev.devcfg) | (u64)mmio_r32(dev.devcfg + 4) << 32;
  return (status() & 0x40) ? 5 : 0;
}

/* Builds slot s's chain: header, optional data, status. */
static void fill(struct queue* Q, int s, u32 type, u64 sector, void* buf, u32 len, int dev_writes,
                 int indirect) {
  Q->hdr[s] = (struct blk_hdr){type, 0, sector};
  Q->status[s] = 0xff;
  Q->done[s] = 0;
  struct vdesc c[3];
  int n = 0;
  c[n++] = (struct vdesc){(u64)&Q->hdr[s], 16, 0, 0};
  if (len) c[n++] = (struct vdesc){(u64)buf, len, (u16)(dev_writes ? D_WRITE : 0), 0};
  c[n++] = (struct vdesc){(u64)&Q->status[s], 1, D_WRITE, 0};
  struct vdesc* t = indirect ? Q->indirect[s] : &Q->m->desc[3 * s];
  for (int i = 0; i < n; ++i) {
    t[i] = c[i];
    if (i + 1 < n) {
      t[i].flags |= D_NEXT;
      t[i].next = (u16)(indirect ? i + 1 : 3 * s + i + 1);
    }
  }
  if (indirect) Q->m->desc[3 * s] = (struct vdesc){(u64)t, (u32)(16 * n), D_INDIRECT, 0};
}

static void publish(struct queue* Q, u16 head) {
  Q->m->avail_ring[Q->next_avail % QSZ] = head;
  ++Q->next_avail;
}

/* Makes published entries visible and notifies unless EVENT_IDX says the
 * device does not want it (2.7.10). */
static u64 kicks;
static void kick(struct queue* Q, int q) {
  u16 old = Q->m->avail_idx;
  barrier();
  Q->m->avail_idx = Q->next_avail;
  mb();
  if (dev.features & F_EVENT_IDX) {
    u16 ev = Q->m->avail_event;
    if ((u16)(Q->next_avail - ev - 1) >= (u16)(Q->next_avail - old)) return;
  }
  ++kicks;
  if (dev.mmio) mmio_w32(Q->notify, (u32)q);
  else mmio_w16(Q->notify, (u16)q);
}

static u64 completed;
static void reap(struct queue* Q) {
  while (Q->m->used_idx != Q->last_used) {
    barrier();
    struct used_elem e = Q->m->used_ring[Q->last_used % QSZ];
    if (e.id / 3 < MAX_SLOTS) {
      Q->done[e.id / 3] = 1;
      Q->used_len[e.id / 3] = e.len;
    }
    ++Q->last_used;
    ++completed;
  }
}

/* Waits until every slot in mask completed (interrupt-driven). */
static void wait_slots(struct queue* Q, u32 mask) {
  for (;;) {
    reap(Q);
    u32 pending = 0;
    for (int s = 0; s < MAX_SLOTS; ++s)
      if ((mask >> s & 1) && !Q->done[s]) pending |= 1u << s;
    if (!pending) return;
    Q->m->used_event = Q->last_used; /* interrupt me for the next one */
    mb();
    if (Q->m->used_idx != Q->last_used) continue;
    wait_irq();
  }
}

static u8 request(int q, u32 type, u64 sector, void* buf, u32 len, int dev_writes, int indirect) {
  struct queue* Q = &queues[q];
  fill(Q, 0, type, sector, buf, len, dev_writes, indirect);
  publish(Q, 0);
  kick(Q, q);
  wait_slots(Q, 1);
  return Q->status[0];
}

static void pattern(void* buf, u64 sector, u32 sectors, int inverted) {
  u64* w = buf;
  for (u64 i = 0; i < sectors * 64ull; ++i) {
    u64 v = (sector + i / 64) * 64 + i % 64;
    w[i] = inverted ? ~v : v;
  }
}
static int matches(const void* buf, u64 sector, u32 sectors, int inverted) {
  const u64* w = buf;
  for (u64 i = 0; i < sectors * 64ull; ++i) {
    u64 v = (sector + i / 64) * 64 + i % 64;
    if (w[i] != (inverted ? ~v : v)) return 0;
  }
  return 1;
}
static int all_zero(const void* buf, u32 len) {
  const u64* w = buf;
  for (u32 i = 0; i < len / 8; ++i)
    if (w[i]) return 0;
  return 1;
}

/* ---- the checks ---- */

static void io_checks(int ro) {
  u8* b = data_buf[0];
  check(request(0, T_IN, 0, b, 4096, 1, 0) == S_OK && matches(b, 0, 8, 0),
        "read sectors 0-7 pattern");
  if (dev.features & F_INDIRECT) {
    check(request(0, T_IN, 8, b, 4096, 1, 1) == S_OK && matches(b, 8, 8, 0),
          "read sectors 8-15 pattern through an indirect table");
  }
  char want[24] = "", id[21];
  get_value("serial", want, sizeof want);
  memset(b, 0xaa, 20);
  u8 st = request(0, T_GET_ID, 0, b, 20, 1, 0);
  memcpy(id, b, 20);
  id[20] = 0;
  int same = 1;
  for (int i = 0; i < 20 && (want[i] || id[i]); ++i) same &= want[i] == id[i];
  check(st == S_OK && same, "get-id returns the serial");

  pattern(b, 64, 8, 1);
  st = request(0, T_OUT, 64, b, 4096, 0, 0);
  if (ro) {
    check(st == S_IOERR, "write refused with IOERR on read-only disk");
  } else {
    check(st == S_OK, "write sectors 64-71");
  }
  memset(b, 0, 4096);
  check(request(0, T_IN, 64, b, 4096, 1, 0) == S_OK && matches(b, 64, 8, !ro),
        ro ? "read sectors 64-71 unchanged" : "read back sectors 64-71");
  check(request(0, T_FLUSH, 0, 0, 0, 0, 0) == S_OK, "flush");

  struct { u64 sector; u32 num, flags; } seg;
  if (dev.features & F_DISCARD) {
    seg.sector = 128, seg.num = 8, seg.flags = 0;
    st = request(0, T_DISCARD, 0, &seg, 16, 0, 0);
    check(st == (ro ? S_IOERR : S_OK), ro ? "discard refused on read-only disk" : "discard sectors 128-135");
  }
  if (dev.features & F_WRITE_ZEROES) {
    seg.sector = 136, seg.num = 8, seg.flags = 0;
    st = request(0, T_WRITE_ZEROES, 0, &seg, 16, 0, 0);
    check(st == (ro ? S_IOERR : S_OK),
          ro ? "write-zeroes refused on read-only disk" : "write-zeroes sectors 136-143");
    memset(b, 0xff, 4096);
    st = request(0, T_IN, 136, b, 4096, 1, 0);
    check(st == S_OK && (ro ? matches(b, 136, 8, 0) : all_zero(b, 4096)),
          ro ? "sectors 136-143 unchanged" : "sectors 136-143 read as zeroes");
  }
  check(request(0, 99, 0, b, 512, 1, 0) == S_UNSUPP, "unknown request type is UNSUPP");
  check(request(0, T_IN, dev.capacity, b, 512, 1, 0) == S_IOERR, "read past the end is IOERR");

  /* Several requests in flight at once; the device may finish them in any order. */
  struct queue* Q = &queues[0];
  for (int s = 0; s < SLOTS; ++s) {
    fill(Q, s, T_IN, 256 + 8 * (u64)s, data_buf[s], 4096, 1, 0);
    publish(Q, (u16)(3 * s));
  }
  kick(Q, 0);
  wait_slots(Q, (1u << SLOTS) - 1);
  int ok = 1;
  for (int s = 0; s < SLOTS; ++s)
    ok &= Q->status[s] == S_OK && Q->used_len[s] == 4097 && matches(data_buf[s], 256 + 8 * (u64)s, 8, 0);
  check(ok, "8 reads in flight at once");

  if (dev.nqueues == 2) {
    if (dev.mmio) queue_irqs[1] = 0; /* the line is shared: count only what follows */
    st = request(1, T_IN, 80, b, 4096, 1, 0);
    check(st == S_OK && matches(b, 80, 8, 0), "read sectors 80-87 on queue 1");
    /* The completion may have been reaped before its interrupt arrived
     * (irqfd injection can lag); the first completion on a queue always
     * interrupts (used_event 0), so wait for it. */
    while (queue_irqs[1] == 0) wait_irq();
    check(queue_irqs[1] > 0, dev.mmio ? "queue 1 completion raises the device's interrupt line"
                                      : "queue 1 completes on its own MSI-X vector");
    if (!ro) {
      pattern(b, 96, 8, 1);
      check(request(1, T_OUT, 96, b, 4096, 0, 0) == S_OK, "write sectors 96-103 on queue 1");
    }
  }
}

/* Writes the pattern to sectors 0-511 in batches of SLOTS 4 KiB writes. */
static void prepare_disk(void) {
  struct queue* Q = &queues[0];
  int ok = 1;
  for (u64 sector = 0; sector < 512; sector += 8 * SLOTS) {
    for (int s = 0; s < SLOTS; ++s) {
      pattern(data_buf[s], sector + 8 * (u64)s, 8, 0);
      fill(Q, s, T_OUT, sector + 8 * (u64)s, data_buf[s], 4096, 0, 0);
      publish(Q, (u16)(3 * s));
    }
    kick(Q, 0);
    wait_slots(Q, (1u << SLOTS) - 1);
    for (int s = 0; s < SLOTS; ++s) ok &= Q->status[s] == S_OK;
  }
  check(ok, "wrote the test pattern to sectors 0-511");
}

/* Reads (or writes) batches of `depth` 4 KiB requests per queue, on every queue at once;
 * the host divides the request count by the wall time. */
static void throughput(u64 total, int write, int depth) {
  const u32 all = depth == 32 ? 0xffffffffu : (1u << depth) - 1;
  u64 before = completed, kicks_before = kicks;
  u64 irqs_before = (u64)queue_irqs[0] + queue_irqs[1];
  int ok = 1;
  /* The host times the run between this line and the "requests" line. */
  puts_("throughput start\n");
  for (u64 done = 0; done < total; done += (u64)depth * (u64)dev.nqueues) {
    for (int q = 0; q < dev.nqueues; ++q) {
      struct queue* Q = &queues[q];
      for (int s = 0; s < depth; ++s) {
        u64 sector = 8 * ((done + (u64)(q * depth + s)) % 64);
        fill(Q, s, write ? T_OUT : T_IN, sector, data_buf[q * depth + s], 4096, !write, 0);
        publish(Q, (u16)(3 * s));
      }
      kick(Q, q);
    }
    for (int q = 0; q < dev.nqueues; ++q) {
      wait_slots(&queues[q], all);
      for (int s = 0; s < depth; ++s) ok &= queues[q].status[s] == S_OK;
    }
  }
  check(ok, "throughput run");
  puts_("requests ");
  putu(completed - before);
  puts_(" total ");
  putu(completed);
  puts_(" kicks ");
  putu(kicks);
  puts_(" run_kicks ");
  putu(kicks - kicks_before);
  puts_(" run_irqs ");
  putu((u64)queue_irqs[0] + queue_irqs[1] - irqs_before);
  putc_('\n');
}

/* ---- hostile mode: malformed chains must end in NEEDS_RESET ---- */

static int wait_needs_reset(void) {
  /* The device sends a configuration change interrupt with NEEDS_RESET. */
  for (u32 spins = 0; spins < 2000000; ++spins) {
    if (status() & 0x40) return 1;
    if (spins > 100) {
      u32 seen = config_irqs;
      if (status() & 0x40) return 1;
      if (config_irqs == seen) wait_irq();
    }
  }
  return 0;
}

static void hostile_case(int kind, const char* what) {
  struct queue* Q = &queues[0];
  struct qmem* m = Q->m;
  switch (kind) {
    case 0: /* data buffer far outside guest RAM */
      fill(Q, 0, T_IN, 0, (void*)0x4000000000ull, 4096, 1, 0);
      break;
    case 1: /* descriptor loop 0 -> 1 -> 0 */
      m->desc[0] = (struct vdesc){(u64)&Q->hdr[0], 16, D_NEXT, 1};
      m->desc[1] = (struct vdesc){(u64)data_buf[0], 512, D_NEXT | D_WRITE, 0};
      break;
    case 2: /* indirect table whose length is not a multiple of 16 */
      m->desc[0] = (struct vdesc){(u64)Q->indirect[0], 24, D_INDIRECT, 0};
      break;
    case 3: /* indirect descriptor inside an indirect table */
      Q->indirect[0][0] = (struct vdesc){(u64)Q->indirect[1], 16, D_INDIRECT, 0};
      m->desc[0] = (struct vdesc){(u64)Q->indirect[0], 16, D_INDIRECT, 0};
      break;
    case 4: /* avail idx jumps far beyond the queue size */
      Q->next_avail = (u16)(Q->next_avail + 1000);
      break;
    case 5: /* indirect chain that loops inside its table (oversized chain) */
      Q->indirect[0][0] = (struct vdesc){(u64)&Q->hdr[0], 16, D_NEXT, 1};
      Q->indirect[0][1] = (struct vdesc){(u64)data_buf[0], 16, D_NEXT, 0};
      m->desc[0] = (struct vdesc){(u64)Q->indirect[0], 32, D_INDIRECT, 0};
      break;
    case 6: /* indirect table of QSZ + 1 entries, a well-formed read: longer
               than the queue size (virtio 2.7.5.3.1) */
    {
      struct vdesc* t = (struct vdesc*)data_buf[2];
      t[0] = (struct vdesc){(u64)&Q->hdr[0], 16, D_NEXT, 1};
      for (u16 i = 1; i < QSZ; ++i) t[i] = (struct vdesc){(u64)data_buf[3], 512, D_NEXT | D_WRITE, (u16)(i + 1)};
      t[QSZ] = (struct vdesc){(u64)&Q->status[0], 1, D_WRITE, 0};
      Q->hdr[0] = (struct blk_hdr){T_IN, 0, 0};
      m->desc[0] = (struct vdesc){(u64)t, 16 * (QSZ + 1), D_INDIRECT, 0};
      break;
    }
  }
  publish(Q, 0);
  kick(Q, 0);
  check(wait_needs_reset(), what);
  int r = dev_init(1);
  u8* b = data_buf[1];
  check(r == 0 && request(0, T_IN, 0, b, 4096, 1, 0) == S_OK && matches(b, 0, 8, 0),
        "device works again after reset");
}

static void hostile_checks(void) {
  hostile_case(0, "buffer outside RAM -> NEEDS_RESET");
  hostile_case(1, "descriptor loop -> NEEDS_RESET");
  hostile_case(2, "bad indirect length -> NEEDS_RESET");
  hostile_case(3, "nested indirect -> NEEDS_RESET");
  hostile_case(4, "avail idx jump -> NEEDS_RESET");
  hostile_case(5, "oversized indirect chain -> NEEDS_RESET");
  hostile_case(6, "indirect table longer than the queue -> NEEDS_RESET");
}

/* ---- idle mode: report every configuration change ---- */

static u64 read_capacity(void) {
  for (;;) {
    u8 gen = config_generation();
    u64 c = mmio_r32(dev.devcfg) | (u64)mmio_r32(dev.devcfg + 4) << 32;
    if (config_generation() == gen) return c;
  }
}

/* ---- the emulation fallback table, executed ---- */

static void cpuid(u32 leaf, u32 sub, u32* a, u32* b, u32* c, u32* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static u64 rflags(void) {
  u64 f;
  __asm__ volatile("pushfq; popq %0" : "=r"(f));
  return f;
}

/* Whether QEMU's TCG executes this guest: the word `tcg` (from a VMM that
 * gives no CPUID), or "QEMU TCG CPU" in the brand string (0x80000002..4). */
static int cpu_is_qemu_tcg(void) {
  if (has_word("tcg")) return 1;
  u32 r[13], a, b, c, d;
  cpuid(0x80000000u, 0, &a, &b, &c, &d);
  if (a < 0x80000004u) return 0;
  for (u32 i = 0; i < 3; ++i) cpuid(0x80000002u + i, 0, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
  r[12] = 0;
  const char* want = "QEMU TCG CPU";
  const char* brand = (const char*)r;
  for (int at = 0; brand[at]; ++at) {
    int i = 0;
    while (want[i] && brand[at + i] == want[i]) ++i;
    if (!want[i]) return 1;
  }
  return 0;
}

static void cpu_checks(void) {
  u64 expect;
  __asm__ volatile("lea 1f(%%rip), %0\n\tint3\n1:" : "=r"(expect)::"memory");
  check(bp_count == 1 && bp_ip == expect, "int3 raises #BP with RIP after the int3");
  __asm__ volatile("lea 1f(%%rip), %0\n\tint $0x81\n1:" : "=r"(expect)::"memory");
  check(sw_count == 1 && sw_ip == expect, "int $0x81 reaches its gate with RIP after the int");

  u32 a, b, c, d, ecx1;
  cpuid(1, 0, &a, &b, &ecx1, &d);
  cpuid(7, 0, &a, &b, &c, &d);
  puts_("# cpuid 1.ecx ");
  puthex(ecx1);
  puts_(" 7.ebx ");
  puthex(b);
  {
    u32 r[13], x;
    cpuid(0x80000000u, 0, &x, &r[0], &r[1], &r[2]);
    puts_(" ext ");
    puthex(x);
    for (u32 i = 0; i < 3; ++i) cpuid(0x80000002u + i, 0, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
    r[12] = 0;
    puts_(" brand ");
    puts_((const char*)r);
  }
  puts_(cpu_is_qemu_tcg() ? " (QEMU TCG)" : "");
  putc_('\n');
  if (b & (1u << 20)) {
    __asm__ volatile("stac" ::: "memory", "cc");
    u64 after_stac = rflags();
    __asm__ volatile("clac" ::: "memory", "cc");
    u64 after_clac = rflags();
    check((after_stac & (1u << 18)) && !(after_clac & (1u << 18)), "stac sets and clac clears RFLAGS.AC");
  } else {
    puts_("# no SMAP in CPUID: clac/stac not run\n");
  }

  __asm__ volatile("fwait" ::: "memory");
  check(1, "fwait retires");

  /* lsl of the flat boot data segment we run on (G=1): limit 4 GiB - 1, ZF=1. */
  u64 limit = 0, sel = 0;
  u8 zf = 0;
  __asm__ volatile("mov %%ds, %0" : "=r"(sel));
  __asm__ volatile("lsl %2, %0\n\tsetz %1" : "+r"(limit), "=q"(zf) : "r"(sel) : "cc");
  check(zf && limit == 0xffffffffull, "lsl reads the boot data segment's limit");

  /* SSE state needs CR4.OSFXSR (tern enters with only PAE in CR4). */
  u64 cr4;
  __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
  __asm__ volatile("mov %0, %%cr4" ::"r"(cr4 | (1u << 9)));
  /* ldmxcsr 4(%reg) with the reset value: it must retire. The value is not
   * read back with stmxcsr: on kvm_pvm no VMM can reach the guest's MXCSR
   * (tern retires the load without it and refuses stmxcsr; docs/vmm.md). */
  volatile u32 in[2] = {0, 0x1f80};
  __asm__ volatile("ldmxcsr 4(%0)" : : "r"(in) : "memory");
  check(1, "ldmxcsr 4(%reg) retires");
  volatile u32 bad = 0x10000 | 0x1f80; /* reserved bit 16 */
  __asm__ volatile("ldmxcsr (%%rax)" : : "a"(&bad) : "memory");
  if (cpu_is_qemu_tcg()) {
    /* Under QEMU's TCG (the lab's KVM runs inside it) the CPU executing this
     * is QEMU's, whose MXCSR load takes reserved bits without #GP. */
    puts_("# QEMU TCG CPU: its ldmxcsr takes reserved bits without #GP; not checked\n");
  } else {
    check(gp_count == 1 && gp_error == 0, "ldmxcsr with a reserved bit raises #GP(0)");
  }
  /* 512 GiB: beyond the boot page tables' one PML4 entry (4 GiB identity). */
  __asm__ volatile("ldmxcsr (%%rax)" : : "a"(0x8000000000ull) : "memory");
  check(pf_count == 1 && pf_error == 0 && pf_cr2 == 0x8000000000ull,
        "ldmxcsr from an unmapped address raises #PF(0) with CR2");
}

static void idle_loop(int ro) {
  puts_("idle\n");
  u32 seen = config_irqs;
  for (;;) {
    while (config_irqs == seen) wait_irq();
    seen = config_irqs;
    u64 old = dev.capacity;
    dev.capacity = read_capacity();
    puts_("capacity ");
    putu(dev.capacity);
    putc_('\n');
    if (dev.capacity >= old + 8 && !ro) {
      u64 s = old & ~7ull;
      u8* b = data_buf[0];
      pattern(b, s, 8, 1);
      u8 w = request(0, T_OUT, s, b, 4096, 0, 0);
      memset(b, 0, 4096);
      u8 r = request(0, T_IN, s, b, 4096, 1, 0);
      check(w == S_OK && r == S_OK && matches(b, s, 8, 1), "write and read past the old end");
    }
  }
}

/* Finds, initializes and checks one device; returns whether it is read-only.
 * With bench, only the throughput run (bench/guest-io.sh). */
static int drive_device(int mmio, int bench) {
  int found = mmio ? find_mmio_device() : find_device();
  check(found, mmio ? "virtio-blk found by probing the virtio-mmio window" : "virtio-blk found by PCI enumeration");
  if (!found) reset_machine();
  puts_(mmio ? "# virtio-mmio " : "# bar0 ");
  puthex(mmio ? dev.base : dev.bar);
  if (mmio) {
    puts_(" irq ");
    putu(dev.gsi);
    route_mmio_irq();
  }
  putc_('\n');
  int r = dev_init(0);
  check(r == 0, mmio ? "device initialized (interrupt line, queues, DRIVER_OK)"
                     : "device initialized (MSI-X, queues, DRIVER_OK)");
  if (r != 0) reset_machine();
  int ro = (dev.features & F_RO) != 0;
  check(ro == has_word("expect_ro"), ro ? "device is read-only" : "device is writable");
  check(dev.nqueues == (int)get_number("expect_queues", (u64)dev.nqueues), "queue count as expected");
  puts_("# capacity ");
  putu(dev.capacity);
  puts_(" queues ");
  putu((u64)dev.nqueues);
  puts_(" features ");
  puthex(dev.features);
  putc_('\n');

  if (!bench) {
    if (!has_word("prepared")) prepare_disk();
    io_checks(ro);
  }
  u64 depth = get_number("depth", SLOTS);
  if (depth < 1 || depth > MAX_SLOTS) depth = SLOTS;
  throughput(get_number("reqs", 256), has_word("write"), (int)depth);
  if (has_word("hostile") && !bench) hostile_checks();
  return ro;
}

void guest_main(u8* boot_params, u8* start_info) {
  /* Mask the 8259s: every interrupt we take is MSI-X or an IOAPIC line
   * through the LAPIC. QEMU's firmware leaves them unmasked with IRQ 0 (the
   * PIT) on vector 8; KVM creates them unmasked on vector base 0, and tern
   * wires ISA lines (the power button's IRQ 12 among them) to them too. */
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  if (start_info) {
    /* hvm_start_info: magic 0x336ec578, cmdline_paddr at offset 24. */
    on_qemu = 1;
    u64 cmd = *(u64*)(start_info + 24);
    if (*(u32*)start_info == 0x336ec578u && cmd) cmdline = (const char*)cmd;
  } else {
    u32 cmd = *(u32*)(boot_params + 0x228);
    if (cmd) cmdline = (const char*)(u64)cmd;
  }
  int bench = has_word("bench");
  puts_("tern-test-guest: ");
  puts_(cmdline);
  putc_('\n');
  setup_interrupts();
  /* QEMU on an emulated KVM (kvm_pvm) stops at the int3 with "KVM internal
   * error" (suberror 1, emulation failure): it has no fallback like tern's. */
  if (!bench && !has_word("no_cpu_checks")) cpu_checks();
  char transport[8] = "pci";
  get_value("transport", transport, sizeof transport);
  int both = transport[0] == 'b';
  int ro = 0;
  for (int pass = 0; pass < (both ? 2 : 1); ++pass) {
    int mmio = both ? pass == 1 : transport[0] == 'm';
    memset(&dev, 0, sizeof dev);
    queue_irqs[0] = queue_irqs[1] = 0;
    ro = drive_device(mmio, bench);
  }
  puts_("done passed ");
  putu(checks - failures);
  puts_(" failed ");
  putu(failures);
  putc_('\n');
  if (failures) reset_machine();
  if (has_word("idle")) idle_loop(ro);
  power_off();
}
