#include "vmm/api_control.h"

#include <poll.h>

#include <chrono>

#include "base/thread_sandbox.h"

namespace tern::vmm {
namespace {

using api::ControlErrc;
using api::control_error;

constexpr std::chrono::seconds kCommandTimeout{30};

api::ControlError resize_error(const std::string& id, const block::Error& e) {
  ControlErrc code = ControlErrc::Internal;
  switch (e.error_class()) {
    case block::ErrorClass::BadRequest: code = ControlErrc::BadRequest; break;
    case block::ErrorClass::Refused:
    case block::ErrorClass::Unsupported: code = ControlErrc::Refused; break;
    case block::ErrorClass::Io:
    case block::ErrorClass::NoSpace:
    case block::ErrorClass::Image:
    case block::ErrorClass::Other: code = ControlErrc::Internal; break;
  }
  return {code, "disk '" + id + "': " + e.message()};
}

}  // namespace

SysResult<std::unique_ptr<ApiControl>> ApiControl::start(Machine& machine) {
  auto channel = api::ControlChannel::create();
  if (!channel) return std::unexpected(channel.error());
  auto stop = EventFd::create();
  if (!stop) return std::unexpected(stop.error());
  auto control = std::unique_ptr<ApiControl>(new ApiControl(machine, std::move(*channel), std::move(*stop)));
  // The control thread: runs the API's commands against the Machine, one at
  // a time, woken by the channel's eventfd; stopped through stop_.
  control->thread_ = start_thread(ThreadKind::Control, [c = control.get()](std::stop_token st) { c->serve(st); });
  return control;
}

ApiControl::ApiControl(Machine& machine, std::unique_ptr<api::ControlChannel> channel, EventFd stop)
    : machine_(machine), channel_(std::move(channel)), stop_(std::move(stop)) {}

ApiControl::~ApiControl() {
  thread_.request_stop();
  stop_.signal();
  if (thread_.joinable()) thread_.join();
  channel_->close();
}

void ApiControl::serve(std::stop_token stop) {
  while (!stop.stop_requested()) {
    pollfd fds[2] = {{channel_->fd(), POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[0].revents & POLLIN) channel_->run_pending();
  }
}

template <class T>
api::ControlResult<T> ApiControl::on_control_thread(std::function<api::ControlResult<T>()> command) {
  auto result = channel_->call<api::ControlResult<T>>(std::move(command), kCommandTimeout);
  if (!result) return control_error(ControlErrc::Unavailable, "the VMM did not answer (shutting down?)");
  return std::move(*result);
}

api::ControlResult<api::VmInfo> ApiControl::info() {
  return on_control_thread<api::VmInfo>([this]() -> api::ControlResult<api::VmInfo> {
    const VmConfig& cfg = machine_.config();
    api::VmInfo info;
    info.state = machine_.finished() ? "Shutdown" : "Running";
    info.cpus = cfg.cpus;
    info.memory_bytes = cfg.memory.size;
    info.kernel = cfg.kernel;
    info.cmdline = cfg.cmdline;
    for (const Disk& d : machine_.disks()) {
      info.disks.push_back(api::DiskInfo{d.config.device.id, d.config.open.path, std::string(d.device->format_name()),
                                         d.device->capacity_sectors() * 512, d.config.open.read_only,
                                         d.config.device.num_queues, d.config.device.queue_size,
                                         d.config.transport == devices::VirtioTransport::Mmio ? "mmio" : "pci"});
    }
    return info;
  });
}

api::ControlResult<std::vector<api::DiskCounters>> ApiControl::counters() {
  return on_control_thread<std::vector<api::DiskCounters>>(
      [this]() -> api::ControlResult<std::vector<api::DiskCounters>> {
        std::vector<api::DiskCounters> out;
        for (const Disk& d : machine_.disks()) {
          out.push_back(api::DiskCounters{.id = d.config.device.id, .counters = d.device->counters()});
        }
        return out;
      });
}

api::ControlResult<void> ApiControl::resize_disk(const std::string& id, uint64_t desired_size) {
  return on_control_thread<void>([this, id, desired_size]() -> api::ControlResult<void> {
    if (machine_.finished()) return control_error(ControlErrc::Unavailable, "the VM is shutting down");
    for (const Disk& d : machine_.disks()) {
      if (d.config.device.id != id) continue;
      if (d.config.open.read_only) return control_error(ControlErrc::Refused, "disk '" + id + "' is read-only");
      if (auto r = d.device->resize(desired_size); !r) return std::unexpected(resize_error(id, r.error()));
      return {};
    }
    return control_error(ControlErrc::NotFound, "no disk with id '" + id + "'");
  });
}

api::ControlResult<void> ApiControl::shutdown_vm() {
  machine_.shutdown();
  return {};
}

api::ControlResult<void> ApiControl::power_button() {
  return on_control_thread<void>([this]() -> api::ControlResult<void> {
    if (machine_.finished()) return control_error(ControlErrc::Unavailable, "the VM is shutting down");
    machine_.press_power_button();
    return {};
  });
}

api::ControlResult<void> ApiControl::shutdown_vmm() {
  machine_.shutdown();
  return {};
}

}  // namespace tern::vmm
