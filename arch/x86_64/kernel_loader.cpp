#include "arch/x86_64/kernel_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace tern::arch::x86_64 {

namespace {

template <class T>
T get(std::span<const uint8_t> b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// [gpa, gpa + len) lies inside ram, without overflow.
bool fits(std::span<uint8_t> ram, uint64_t gpa, uint64_t len) {
  return gpa <= ram.size() && len <= ram.size() - gpa;
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

Result<LoadedKernel> load_bzimage(std::span<const uint8_t> image, std::span<uint8_t> ram) {
  if (image.size() < kInitSizeOff + 4) return fail(Errc::BadBzImage, "file too short for a setup header");
  if (get<uint16_t>(image, kBootFlagOff) != 0xaa55) return fail(Errc::BadBzImage, "boot_flag is not 0xAA55");
  uint16_t version = get<uint16_t>(image, kVersionOff);
  // boot.rst: protocol 2.12 added xloadflags, the 64-bit entry's flag.
  if (version < kMinProtocol) {
    char b[64];
    std::snprintf(b, sizeof b, "boot protocol %u.%02u, need 2.12 or later", version >> 8, version & 0xff);
    return fail(Errc::UnsupportedProtocol, b);
  }
  if (!(image[kLoadflagsOff] & kLoadedHigh)) {
    return fail(Errc::BadBzImage, "loadflags lacks LOADED_HIGH (a zImage, not a bzImage)");
  }
  if (!(get<uint16_t>(image, kXloadflagsOff) & kXlfKernel64)) {
    return fail(Errc::UnsupportedProtocol, "kernel has no 64-bit entry point (XLF_KERNEL_64)");
  }
  // The setup header ends at 0x202 + the jump's displacement byte (boot.rst:
  // "the end of the header ... 0x0202 + byte value at offset 0x0201").
  size_t header_end = 0x202 + image[0x201];
  if (header_end > image.size() || header_end <= kInitSizeOff + 4 || header_end > 0x1000) {
    return fail(Errc::BadBzImage, "setup header length " + hex(header_end));
  }
  uint64_t setup_sects = image[kSetupSectsOff];
  if (setup_sects == 0) setup_sects = 4;  // boot.rst: "if this field is 0, the real value is 4"
  uint64_t pm_offset = (setup_sects + 1) * 512;
  if (pm_offset >= image.size()) return fail(Errc::BadBzImage, "no protected-mode kernel after the setup sectors");
  uint64_t pm_size = image.size() - pm_offset;

  // A relocatable kernel may run anywhere kernel_alignment allows; it moves
  // itself to an aligned address, so loading at 1 MiB as every boot loader
  // does is fine. A non-relocatable one must be at pref_address.
  uint64_t load = kKernelLoadAddr;
  if (!image[kRelocatableOff]) {
    uint64_t pref = get<uint64_t>(image, kPrefAddressOff);
    if (pref != 0) load = pref;
  }
  uint64_t init_size = get<uint32_t>(image, kInitSizeOff);
  uint64_t need = std::max(pm_size, init_size);
  if (!fits(ram, load, need)) {
    return fail(Errc::DoesNotFit, "kernel needs " + hex(need) + " bytes at " + hex(load) +
                                      ", RAM ends at " + hex(ram.size()));
  }
  std::memcpy(ram.data() + load, image.data() + pm_offset, pm_size);

  LoadedKernel k;
  k.kind = KernelKind::BzImage;
  k.linux_kernel = true;
  k.entry = load + 0x200;  // boot.rst, "64-bit BOOT PROTOCOL": startup_64
  k.end = load + need;
  k.setup_header.assign(image.begin() + kSetupHeaderStart, image.begin() + header_end);
  k.initrd_addr_max = get<uint32_t>(image, kInitrdAddrMaxOff);
  k.protocol = version;
  return k;
}

// Whether a PT_NOTE segment holds a note owned by "Linux" (a vmlinux carries
// LINUX_ELFNOTE entries; include/linux/elfnote.h). Malformed notes end the
// scan: this only decides whether Linux-only boot parameters apply.
bool has_linux_note(std::span<const uint8_t> image, const Elf64_Phdr& ph) {
  if (ph.p_offset > image.size() || ph.p_filesz > image.size() - ph.p_offset) return false;
  std::span<const uint8_t> notes = image.subspan(ph.p_offset, ph.p_filesz);
  auto align4 = [](uint64_t v) { return (v + 3) & ~uint64_t{3}; };
  size_t at = 0;
  while (notes.size() - at >= sizeof(Elf64_Nhdr)) {
    auto nh = get<Elf64_Nhdr>(notes, at);
    at += sizeof(Elf64_Nhdr);
    uint64_t name_len = align4(nh.n_namesz), desc_len = align4(nh.n_descsz);
    if (name_len > notes.size() - at) return false;
    if (nh.n_namesz == 6 && std::memcmp(notes.data() + at, "Linux", 6) == 0) return true;
    at += name_len;
    if (desc_len > notes.size() - at) return false;
    at += desc_len;
  }
  return false;
}

Result<LoadedKernel> load_elf(std::span<const uint8_t> image, std::span<uint8_t> ram) {
  if (image.size() < sizeof(Elf64_Ehdr)) return fail(Errc::BadElf, "file shorter than an ELF header");
  auto eh = get<Elf64_Ehdr>(image, 0);
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64) {
    return fail(Errc::BadElf, "not a little-endian x86-64 ELF64");
  }
  if (eh.e_type != ET_EXEC) return fail(Errc::BadElf, "not an executable (ET_EXEC)");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) return fail(Errc::BadElf, "unexpected program header size");
  if (eh.e_phoff > image.size() || uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr) > image.size() - eh.e_phoff) {
    return fail(Errc::BadElf, "program headers outside the file");
  }
  LoadedKernel k;
  k.kind = KernelKind::Elf64;
  k.entry = eh.e_entry;
  bool any = false, entry_loaded = false;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    auto ph = get<Elf64_Phdr>(image, eh.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type == PT_NOTE && has_linux_note(image, ph)) k.linux_kernel = true;
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz) return fail(Errc::BadElf, "segment with p_filesz > p_memsz");
    if (ph.p_offset > image.size() || ph.p_filesz > image.size() - ph.p_offset) {
      return fail(Errc::BadElf, "segment data outside the file");
    }
    if (!fits(ram, ph.p_paddr, ph.p_memsz)) {
      return fail(Errc::DoesNotFit, "segment [" + hex(ph.p_paddr) + ", +" + hex(ph.p_memsz) +
                                        ") outside RAM (ends at " + hex(ram.size()) + ")");
    }
    if (ph.p_paddr < kKernelLoadAddr) {
      return fail(Errc::DoesNotFit, "segment at " + hex(ph.p_paddr) + " overlaps the boot structures below 1 MiB");
    }
    std::memcpy(ram.data() + ph.p_paddr, image.data() + ph.p_offset, ph.p_filesz);
    std::memset(ram.data() + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
    k.end = std::max(k.end, ph.p_paddr + ph.p_memsz);
    if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) entry_loaded = true;
    any = true;
  }
  if (!any) return fail(Errc::BadElf, "no PT_LOAD segment");
  if (!entry_loaded) return fail(Errc::BadElf, "entry point " + hex(eh.e_entry) + " is not in a loaded segment");
  return k;
}

}  // namespace

Result<LoadedKernel> load_kernel(std::span<const uint8_t> image, std::span<uint8_t> ram) {
  if (image.size() >= 4 && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) return load_elf(image, ram);
  if (image.size() >= kHeaderMagicOff + 4 && std::memcmp(image.data() + kHeaderMagicOff, "HdrS", 4) == 0) {
    return load_bzimage(image, ram);
  }
  return fail(Errc::UnknownKernelFormat, "neither an ELF64 executable nor a bzImage (no \"HdrS\")");
}

Result<uint64_t> load_initramfs(std::span<const uint8_t> initrd, const LoadedKernel& kernel,
                                std::span<uint8_t> ram) {
  constexpr uint64_t kPage = 4096;
  uint64_t top = std::min<uint64_t>(ram.size(), kernel.initrd_addr_max + 1);
  if (initrd.size() > top) return fail(Errc::DoesNotFit, "initramfs larger than the memory below its limit");
  uint64_t gpa = (top - initrd.size()) & ~(kPage - 1);
  if (gpa < kernel.end) {
    return fail(Errc::DoesNotFit, "initramfs of " + hex(initrd.size()) +
                                      " bytes does not fit between the kernel and " + hex(top));
  }
  std::memcpy(ram.data() + gpa, initrd.data(), initrd.size());
  return gpa;
}

std::string Error::message() const {
  const char* what = "";
  switch (code) {
    case Errc::UnknownKernelFormat: what = "unknown kernel format"; break;
    case Errc::BadBzImage: what = "bad bzImage"; break;
    case Errc::UnsupportedProtocol: what = "unsupported boot protocol"; break;
    case Errc::BadElf: what = "bad ELF kernel"; break;
    case Errc::DoesNotFit: what = "does not fit in guest memory"; break;
    case Errc::TooManyE820Entries: what = "too many e820 entries"; break;
  }
  return detail.empty() ? what : std::string(what) + ": " + detail;
}

}  // namespace tern::arch::x86_64
