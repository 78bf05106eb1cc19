#include "backend/device.h"

#include <cctype>

namespace gemma {

#if defined(GEMMA_HAVE_CUDA)
// csrc/cuda/device_info.cpp: the CUDA runtime's view of the GPUs.
std::vector<GpuInfo> cuda_list_devices(std::string* error);
#endif

static const char* kBuildHint =
    "this gemma_cpp was built without CUDA; rebuild it with: pip install . -C cmake.define.GEMMA_CUDA=ON "
    "(needs nvcc, the CUDA toolkit; docs/cuda.md)";

Device parse_device(const std::string& s) {
  Device d;
  if (s == "cpu") return d;
  if (s == "cuda") {
    d.kind = Device::Kind::Cuda;
    return d;
  }
  if (s.size() > 5 && s.size() <= 9 && s.compare(0, 5, "cuda:") == 0) {
    bool digits = true;
    for (size_t i = 5; i < s.size(); ++i) digits = digits && std::isdigit(static_cast<unsigned char>(s[i]));
    if (digits) {
      d.kind = Device::Kind::Cuda;
      d.index = std::stoi(s.substr(5));
      return d;
    }
  }
  throw std::invalid_argument("unknown device '" + s + "' (expected \"cpu\", \"cuda\" or \"cuda:N\")");
}

std::string device_name(const Device& d) {
  return d.is_cuda() ? "cuda:" + std::to_string(d.index) : "cpu";
}

bool cuda_built() {
#if defined(GEMMA_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

std::vector<GpuInfo> cuda_devices() {
#if defined(GEMMA_HAVE_CUDA)
  std::string error;
  return cuda_list_devices(&error);
#else
  return {};
#endif
}

std::string cuda_unavailable_reason() {
#if defined(GEMMA_HAVE_CUDA)
  std::string error;
  const std::vector<GpuInfo> gpus = cuda_list_devices(&error);
  if (!gpus.empty()) return "";
  return "no usable CUDA GPU: " + (error.empty() ? std::string("the CUDA runtime reports 0 devices") : error);
#else
  return kBuildHint;
#endif
}

void check_device(const Device& d) {
  if (!d.is_cuda()) return;
  if (!cuda_built()) throw DeviceError("device '" + device_name(d) + "': " + kBuildHint);
  const std::vector<GpuInfo> gpus = cuda_devices();
  if (gpus.empty()) throw DeviceError("device '" + device_name(d) + "': " + cuda_unavailable_reason());
  if (d.index >= int(gpus.size()))
    throw DeviceError("device '" + device_name(d) + "': only " + std::to_string(gpus.size()) +
                      " CUDA GPU(s) present (cuda:0 .. cuda:" + std::to_string(gpus.size() - 1) + ")");
}

}  // namespace gemma
