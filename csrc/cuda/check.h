// CUDA runtime errors as C++ exceptions (std::runtime_error naming the call and the runtime's
// message), so they reach Python as RuntimeError instead of aborting the process.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace gemma::cuda {

inline void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e) + " (" + file + ":" +
                           std::to_string(line) + ")");
}

}  // namespace gemma::cuda

#define GEMMA_CUDA_CHECK(call) ::gemma::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad launch configuration is reported here, a fault at the next sync.
#define GEMMA_CUDA_LAUNCHED(name) ::gemma::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)
