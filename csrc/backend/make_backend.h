// The backend for a Model's device (backend/device.h): CpuBackend on n_threads threads for
// "cpu", CudaBackend for "cuda:N" (throws DeviceError when that device cannot be used).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace gemma {

class Model;

std::unique_ptr<Backend> make_backend(const std::shared_ptr<const Model>& model, int n_threads);

}  // namespace gemma
