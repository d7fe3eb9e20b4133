#include "vmm/config.h"

#include <CLI/CLI.hpp>

#include <charconv>
#include <sstream>
#include <set>

#include "base/thread_sandbox.h"
#include "base/version.h"

namespace tern::vmm {

namespace {

using Unexpected = std::unexpected<std::string>;

// "k=v,k=v" -> pairs, in order. A part without '=' is an error.
std::expected<std::vector<std::pair<std::string, std::string>>, std::string> split_pairs(
    std::string_view option, std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  if (text.empty()) return Unexpected("--" + std::string(option) + ": empty value");
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    size_t eq = part.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Unexpected("--" + std::string(option) + ": expected key=value, got \"" + std::string(part) + "\"");
    }
    out.emplace_back(std::string(part.substr(0, eq)), std::string(part.substr(eq + 1)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::expected<uint64_t, std::string> parse_number(std::string_view what, std::string_view text, uint64_t min,
                                                  uint64_t max) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size() || text.empty()) {
    return Unexpected(std::string(what) + ": \"" + std::string(text) + "\" is not a number");
  }
  if (v < min || v > max) {
    return Unexpected(std::string(what) + ": " + std::string(text) + " is outside " + std::to_string(min) +
                      ".." + std::to_string(max));
  }
  return v;
}

std::expected<bool, std::string> parse_on_off(std::string_view what, std::string_view text) {
  if (text == "on" || text == "true") return true;
  if (text == "off" || text == "false") return false;
  return Unexpected(std::string(what) + ": expected on or off, got \"" + std::string(text) + "\"");
}

}  // namespace

std::expected<uint64_t, std::string> parse_size(std::string_view text) {
  if (text.empty()) return Unexpected("empty size");
  uint64_t shift = 0;
  switch (text.back()) {
    case 'K': case 'k': shift = 10; break;
    case 'M': case 'm': shift = 20; break;
    case 'G': case 'g': shift = 30; break;
    case 'T': case 't': shift = 40; break;
    default: break;
  }
  std::string_view digits = shift ? text.substr(0, text.size() - 1) : text;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (digits.empty() || ec != std::errc{} || p != digits.data() + digits.size()) {
    return Unexpected("\"" + std::string(text) + "\" is not a size (examples: 512M, 2G, 1048576)");
  }
  if (shift && v > (UINT64_MAX >> shift)) return Unexpected("size \"" + std::string(text) + "\" is too large");
  return v << shift;
}

std::expected<CpusConfig, std::string> parse_cpus(std::string_view text) {
  auto pairs = split_pairs("cpus", text);
  if (!pairs) return Unexpected(pairs.error());
  CpusConfig c;
  for (auto& [k, v] : *pairs) {
    if (k == "boot") {
      auto n = parse_number("--cpus boot", v, 1, kMaxCpus);
      if (!n) return Unexpected(n.error());
      c.boot = static_cast<uint32_t>(*n);
    } else if (k == "profile") {
      if (v == "auto") c.profile = CpuProfile::Auto;
      else if (v == "host") c.profile = CpuProfile::Host;
      else if (v == "emulated") c.profile = CpuProfile::Emulated;
      else return Unexpected("--cpus profile: \"" + v + "\" is not auto, host or emulated");
    } else {
      return Unexpected("--cpus: unknown key \"" + k + "\" (known: boot, profile)");
    }
  }
  return c;
}

std::expected<MemoryConfig, std::string> parse_memory(std::string_view text) {
  auto pairs = split_pairs("memory", text);
  if (!pairs) return Unexpected(pairs.error());
  MemoryConfig m;
  uint64_t& size = m.size;
  for (auto& [k, v] : *pairs) {
    if (k == "thp") {
      if (v != "on" && v != "off") return Unexpected("--memory thp: expected on or off, got \"" + v + "\"");
      m.thp = v == "on";
      continue;
    }
    if (k != "size") return Unexpected("--memory: unknown key \"" + k + "\" (known: size, thp)");
    auto s = parse_size(v);
    if (!s) return Unexpected("--memory size: " + s.error());
    size = *s;
  }
  if (size < kMinMemory || size > kMaxMemory) {
    return Unexpected("--memory size: " + std::to_string(size) + " bytes is outside 16M..1T");
  }
  if (size % 4096) return Unexpected("--memory size: must be a multiple of 4 KiB");
  return m;
}

std::expected<SerialConfig, std::string> parse_serial(std::string_view text) {
  SerialConfig c;
  if (text == "tty") return c;
  if (text == "off" || text == "null") {
    c.mode = SerialMode::Off;
    return c;
  }
  if (!text.starts_with("file=")) {
    return Unexpected("--serial: expected tty, off or file=PATH[,max_size=SIZE], got \"" + std::string(text) + "\"");
  }
  auto pairs = split_pairs("serial", text);
  if (!pairs) return Unexpected(pairs.error());
  c.mode = SerialMode::File;
  for (auto& [k, v] : *pairs) {
    if (k == "file") {
      c.path = v;
    } else if (k == "max_size") {
      auto s = parse_size(v);
      if (!s) return Unexpected("--serial max_size: " + s.error());
      c.max_size = *s;
    } else {
      return Unexpected("--serial: unknown key \"" + k + "\" (known: file, max_size)");
    }
  }
  if (c.path.empty()) return Unexpected("--serial: file= needs a path");
  return c;
}

std::expected<DiskConfig, std::string> parse_disk(std::string_view text, size_t index) {
  auto pairs = split_pairs("disk", text);
  if (!pairs) return Unexpected(pairs.error());
  DiskConfig d;
  d.device.id = "disk" + std::to_string(index);
  std::set<std::string> seen;
  for (auto& [k, v] : *pairs) {
    if (!seen.insert(k).second) return Unexpected("--disk: key \"" + k + "\" given twice");
    std::string what = "--disk " + k;
    auto flag = [&](bool& out) -> std::expected<void, std::string> {
      auto b = parse_on_off(what, v);
      if (!b) return Unexpected(b.error());
      out = *b;
      return {};
    };
    std::expected<void, std::string> r;
    if (k == "path") {
      if (v.empty()) return Unexpected("--disk path: empty");
      d.open.path = v;
    } else if (k == "id") {
      if (v.empty()) return Unexpected("--disk id: empty");
      d.device.id = v;
    } else if (k == "readonly") {
      r = flag(d.open.read_only);
      d.device.read_only = d.open.read_only;
    } else if (k == "backing_files") {
      r = flag(d.open.allow_backing);
    } else if (k == "direct") {
      r = flag(d.open.direct);
    } else if (k == "lock") {
      r = flag(d.open.lock);
    } else if (k == "num_queues") {
      auto n = parse_number(what, v, 1, devices::kVirtioMaxQueues);
      if (!n) return Unexpected(n.error());
      d.device.num_queues = static_cast<uint16_t>(*n);
    } else if (k == "queue_size") {
      auto n = parse_number(what, v, 2, devices::kMaxQueueSize);
      if (!n) return Unexpected(n.error());
      if (*n & (*n - 1)) return Unexpected(what + ": " + v + " is not a power of two");
      d.device.queue_size = static_cast<uint16_t>(*n);
    } else if (k == "image_type") {
      auto type = block::parse_image_type(v);
      if (!type || v.empty()) return Unexpected(what + ": expected raw or qcow2, got \"" + v + "\"");
      d.open.type = *type;
    } else if (k == "serial") {
      d.device.serial = v;
    } else if (k == "aio") {
      if (v == "sync") d.open.aio = block::AioMode::Sync;
      else if (v == "native") d.open.aio = block::AioMode::Native;
      else if (v == "threads") d.open.aio = block::AioMode::Threads;
      else return Unexpected(what + ": expected sync, native or threads, got \"" + v + "\"");
    } else if (k == "transport") {
      if (v == "pci") d.transport = devices::VirtioTransport::Pci;
      else if (v == "mmio") d.transport = devices::VirtioTransport::Mmio;
      else return Unexpected(what + ": expected pci or mmio, got \"" + v + "\"");
    } else {
      return Unexpected("--disk: unknown key \"" + k +
                        "\" (known: path, readonly, id, num_queues, queue_size, image_type, "
                        "backing_files, direct, serial, lock, aio, transport)");
    }
    if (!r) return Unexpected(r.error());
  }
  if (d.open.path.empty()) return Unexpected("--disk: path= is required");
  // A header found by probing may be one a guest wrote into what was its
  // raw disk: the VMM follows no backing file it names unless
  // image_type=qcow2 says the header is the user's (docs/SECURITY.md,
  // "Probed images").
  d.open.follow_probed_backing = false;
  return d;
}

std::expected<LandlockRule, std::string> parse_landlock_rule(std::string_view text) {
  auto pairs = split_pairs("landlock-rules", text);
  if (!pairs) return Unexpected(pairs.error());
  LandlockRule rule;
  bool access = false;
  for (auto& [k, v] : *pairs) {
    if (k == "path") {
      if (v.empty()) return Unexpected("--landlock-rules path: empty");
      rule.path = v;
    } else if (k == "access") {
      if (v == "ro") rule.writable = false;
      else if (v == "rw") rule.writable = true;
      else return Unexpected("--landlock-rules access: expected ro or rw, got \"" + v + "\"");
      access = true;
    } else {
      return Unexpected("--landlock-rules: unknown key \"" + k + "\" (known: path, access)");
    }
  }
  if (rule.path.empty()) return Unexpected("--landlock-rules: path= is required");
  if (!access) return Unexpected("--landlock-rules: access=ro or access=rw is required");
  return rule;
}

std::expected<VmConfig, ParseExit> parse_command_line(int argc, const char* const* argv) {
  CLI::App app{"tern: a minimal KVM virtual machine monitor", "tern"};
  app.set_version_flag("--version", std::string("tern version ") + version_text());
  VmConfig c;
  std::string initramfs, cpus = "boot=1", memory = "size=512M", serial = "tty", api_socket;
  std::vector<std::string> disks, landlock_rules;
  std::string seccomp = "true", landlock;
  app.add_option("--kernel", c.kernel, "Linux bzImage or ELF64 kernel")->required()->check(CLI::ExistingFile);
  app.add_option("--initramfs", initramfs, "initramfs image")->check(CLI::ExistingFile);
  app.add_option("--cmdline", c.cmdline, "kernel command line");
  app.add_option("--cpus", cpus,
                 "boot=N[,profile=auto|host|emulated] (vCPUs; profile: which CPU features the guest sees; "
                 "auto hides those a software-emulated KVM cannot run, on such hosts only)");
  app.add_option("--memory", memory, "size=SIZE[,thp=on|off] (e.g. 512M; thp: transparent huge pages, default on)");
  app.add_option("--serial", serial, "tty | file=PATH[,max_size=SIZE] (default 64M, 0: no cap) | off");
  app.add_option("--disk", disks,
                 "path=P[,readonly=on][,id=NAME][,num_queues=N][,queue_size=N][,image_type=raw|qcow2]"
                 "[,backing_files=on][,direct=on][,serial=STR][,lock=on|off][,aio=sync|native|threads]"
                 "[,transport=pci|mmio]")
      ->take_all();
  std::string mmio_cmdline = "on";
  app.add_option("--virtio-mmio-cmdline", mmio_cmdline,
                 "on|off: append virtio_mmio.device= for each transport=mmio disk to a Linux command line "
                 "(the DSDT describes them either way)");
  app.add_option("--api-socket", api_socket, "path of the API's Unix socket");
  app.add_option("--timeout", c.timeout_s,
                 "SECONDS: stop a VM still running after this long, exit status 4 (default 0: no limit)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 31));
  app.add_option("--seccomp", seccomp,
                 "true | false | log: a seccomp filter per thread kind; true kills tern (status 1) on a forbidden "
                 "system call, log lets it through and the kernel logs it (default true)");
  app.add_option("--landlock", landlock,
                 "true | false: after set-up, tern may open only its disks, their backing chains and the API "
                 "socket's directory (default true where the kernel offers Landlock)");
  app.add_option("--landlock-rules", landlock_rules, "path=P,access=ro|rw: one more path Landlock allows")
      ->take_all();
  // Test-only (docs/SECURITY.md, "Testing the sandbox"); hidden from --help.
  app.add_option("--sandbox-test", c.sandbox.test)->group("")->take_all();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    int code = app.exit(e, out, err);
    return std::unexpected(ParseExit{code == 0 ? 0 : 1, out.str() + err.str()});
  }
  auto bad = [](std::string m) { return std::unexpected(ParseExit{1, "tern: " + m + "\n"}); };
  if (!initramfs.empty()) c.initramfs = initramfs;
  if (!api_socket.empty()) c.api_socket = api_socket;
  auto n = parse_cpus(cpus);
  if (!n) return bad(n.error());
  c.cpus = n->boot;
  c.cpu_profile = n->profile;
  auto m = parse_memory(memory);
  if (!m) return bad(m.error());
  c.memory = *m;
  auto s = parse_serial(serial);
  if (!s) return bad(s.error());
  c.serial = *s;
  auto mc = parse_on_off("--virtio-mmio-cmdline", mmio_cmdline);
  if (!mc) return bad(mc.error());
  c.virtio_mmio_cmdline = *mc;
  if (seccomp == "true") c.sandbox.seccomp = SeccompMode::Kill;
  else if (seccomp == "false") c.sandbox.seccomp = SeccompMode::Off;
  else if (seccomp == "log") c.sandbox.seccomp = SeccompMode::Log;
  else return bad("--seccomp: expected true, false or log, got \"" + seccomp + "\"");
  if (landlock == "true") c.sandbox.landlock = LandlockMode::On;
  else if (landlock == "false") c.sandbox.landlock = LandlockMode::Off;
  else if (!landlock.empty()) return bad("--landlock: expected true or false, got \"" + landlock + "\"");
  for (const std::string& text : landlock_rules) {
    auto rule = parse_landlock_rule(text);
    if (!rule) return bad(rule.error());
    c.sandbox.rules.push_back(std::move(*rule));
  }
  for (const std::string& t : c.sandbox.test) {
    bool kind = false;  // mmap=KIND, write=KIND: any thread kind
    for (size_t k = 0; k < kThreadKindCount; ++k) {
      std::string name = thread_kind_name(static_cast<ThreadKind>(k));
      kind = kind || t == "mmap=" + name || t == "write=" + name;
    }
    if (t != "vcpu" && t != "virtio-queue" && t != "api" && !kind && !t.starts_with("open=") &&
        !t.starts_with("unlink=") && !t.starts_with("kill=")) {
      return bad("--sandbox-test: expected vcpu, virtio-queue, api, mmap=KIND, write=KIND, open=PATH, unlink=PATH or "
                 "kill=PID, got \"" + t + "\"");
    }
  }
  std::set<std::string> ids;
  size_t mmio_disks = 0;
  for (size_t i = 0; i < disks.size(); ++i) {
    auto d = parse_disk(disks[i], i);
    if (!d) return bad(d.error());
    if (!ids.insert(d->device.id).second) return bad("--disk: id \"" + d->device.id + "\" used twice");
    if (d->transport == devices::VirtioTransport::Mmio && ++mmio_disks > kMaxMmioDisks) {
      return bad("--disk " + d->device.id + ": at most " + std::to_string(kMaxMmioDisks) + " disks with transport=mmio");
    }
    c.disks.push_back(std::move(*d));
  }
  return c;
}

}  // namespace tern::vmm
