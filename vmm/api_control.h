// ApiControl: the VMM side of the HTTP API. The API thread calls the
// api::VmmControl methods; each one is handed over a ControlChannel to the
// control thread this class owns, which is the only thread that touches the
// Machine on the API's behalf (Firecracker's api_server_adapter shape).
#pragma once

#include <memory>
#include <thread>

#include "api/control_channel.h"
#include "api/vmm_control.h"
#include "base/event_fd.h"
#include "vmm/machine.h"

namespace tern::vmm {

class ApiControl final : public api::VmmControl {
 public:
  static SysResult<std::unique_ptr<ApiControl>> start(Machine& machine);
  ~ApiControl() override;  // stops and joins the control thread

  api::ControlResult<api::VmInfo> info() override;
  api::ControlResult<std::vector<api::DiskCounters>> counters() override;
  api::ControlResult<void> resize_disk(const std::string& id, uint64_t desired_size) override;
  api::ControlResult<void> shutdown_vm() override;
  api::ControlResult<void> power_button() override;
  api::ControlResult<void> shutdown_vmm() override;

 private:
  ApiControl(Machine& machine, std::unique_ptr<api::ControlChannel> channel, EventFd stop);
  template <class T>
  api::ControlResult<T> on_control_thread(std::function<api::ControlResult<T>()> command);
  void serve(std::stop_token stop);

  Machine& machine_;
  std::unique_ptr<api::ControlChannel> channel_;
  EventFd stop_;
  std::jthread thread_;
};

}  // namespace tern::vmm
