#include "backend/make_backend.h"

#include "backend/cpu/cpu_backend.h"
#include "backend/device.h"
#include "model/weights.h"

namespace gemma {

#if defined(GEMMA_HAVE_CUDA)
// csrc/cuda/cuda_backend.cpp (declared here so this file needs no CUDA headers).
std::unique_ptr<Backend> make_cuda_backend(const std::shared_ptr<const Model>& model, int device);
#endif

std::unique_ptr<Backend> make_backend(const std::shared_ptr<const Model>& model, int n_threads) {
  const Device& d = model->device();
  if (!d.is_cuda()) return std::unique_ptr<Backend>(new CpuBackend(n_threads));
  check_device(d);
#if defined(GEMMA_HAVE_CUDA)
  return make_cuda_backend(model, d.index);
#else
  throw DeviceError("unreachable: check_device accepted a CUDA device in a build without CUDA");
#endif
}

}  // namespace gemma
