// Which hardware a Model's forward passes run on: "cpu" (the default) or a CUDA GPU
// ("cuda" = "cuda:0", "cuda:N"). The device is a property of the loaded Model (model/weights.h):
// every Session, batched pass and draft session of that Model gets a backend for it
// (make_backend), so a Model's KV caches and weights always live where its ops run.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gemma {

struct Device {
  enum class Kind : uint8_t { Cpu, Cuda };
  Kind kind = Kind::Cpu;
  int index = 0;  // the CUDA device ordinal
  bool is_cuda() const { return kind == Kind::Cuda; }
};

// A device that was asked for but cannot be used (no CUDA in this build, no GPU or driver, an
// ordinal past the GPUs present). The bindings turn it into gemma_cpp.DeviceError.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "cpu", "cuda" or "cuda:N" (N a decimal ordinal); anything else throws std::invalid_argument
// naming the accepted forms. Says nothing about whether the device exists (check_device does).
Device parse_device(const std::string& s);
std::string device_name(const Device& d);  // "cpu", "cuda:0", ...

// One CUDA GPU as the runtime reports it.
struct GpuInfo {
  int index = 0;
  std::string name;
  int64_t memory_bytes = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
  int64_t memory_bus_bits = 0;     // for the DRAM-bandwidth roofline
  int64_t memory_clock_khz = 0;
};

bool cuda_built();                  // this library was compiled with GEMMA_CUDA=ON
std::vector<GpuInfo> cuda_devices();  // empty when not built, or no GPU / driver
// Why cuda_devices() is empty ("" when it is not): the runtime's own error, or how to build.
std::string cuda_unavailable_reason();

// Throws DeviceError with the reason and the way out when `d` cannot be used here.
void check_device(const Device& d);

}  // namespace gemma
