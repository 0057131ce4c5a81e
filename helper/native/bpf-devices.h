// cgroup v2 device programs (BPF_PROG_TYPE_CGROUP_DEVICE) for container device rules.
#pragma once

#include <napi.h>

namespace kata {

// Add bpfDeviceProgram, bpfDeviceLoad, bpfDeviceAttach, bpfDeviceDetach, bpfDeviceQuery to the
// addon's exports (contract: shared/native.ts).
void RegisterBpfDevices(Napi::Env env, Napi::Object exports);

}  // namespace kata
