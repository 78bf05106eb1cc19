// The GPUs the CUDA runtime sees (backend/device.h's cuda_devices). The runtime is linked
// statically, so this runs (and reports an error instead of failing to load) on a machine
// without a GPU or an NVIDIA driver.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "backend/device.h"

namespace gemma {

std::vector<GpuInfo> cuda_list_devices(std::string* error) {
  std::vector<GpuInfo> out;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    *error = std::string("the CUDA runtime says: ") + cudaGetErrorString(e) +
             (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                  ? " (is there an NVIDIA GPU with its driver on this machine?)"
                  : "");
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    GpuInfo g;
    g.index = i;
    g.name = p.name;
    g.memory_bytes = int64_t(p.totalGlobalMem);
    g.cc_major = p.major;
    g.cc_minor = p.minor;
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, i) == cudaSuccess) g.memory_bus_bits = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, i) == cudaSuccess) g.memory_clock_khz = v;
    out.push_back(g);
  }
  return out;
}

}  // namespace gemma
