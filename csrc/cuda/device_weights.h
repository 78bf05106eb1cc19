// A Model's weights on one GPU, uploaded once and shared by every CudaBackend of that Model on
// that device (the sessions of a Model and its clones, its batched pass): matrices in the
// DevMatrix layout (cuda/kernels.h; Rows16 tensors gathered back to rows first), the norm gains
// as float arrays. The forward pass keeps handing the backend the Model's host pointers
// (backend.h); find() maps each to its device copy. Read-only once built: safe to share
// between threads.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/kernels.h"
#include "kernels/matmul.h"

namespace gemma {
class Model;
}

namespace gemma::cuda {

class DeviceWeights {
 public:
  explicit DeviceWeights(int device) : device_(device) {}
  ~DeviceWeights();
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  // The weights of `model` on `device`, uploaded at the first call and shared while any backend
  // holds them. Throws DeviceError for a weight format the CUDA kernels do not run.
  static std::shared_ptr<DeviceWeights> of(const Model& model, int device);

  int device() const { return device_; }

  // Upload one matrix / one float array (keyed by its host pointer); tests add and drop their own.
  void add(const WeightView& w, const char* name);
  void add(const float* host, int64_t n);
  void drop(const void* host);

  const DevMatrix& find(const WeightView& w) const;  // throws std::invalid_argument if not uploaded
  const float* find(const float* host) const;

  int64_t bytes() const { return bytes_; }

 private:
  void* upload(const void* src, size_t bytes);

  int device_;
  int64_t bytes_ = 0;
  std::unordered_map<const void*, DevMatrix> matrices_;
  std::unordered_map<const void*, const float*> arrays_;
  std::unordered_map<const void*, std::vector<void*>> owned_;  // device allocations per host pointer
};

}  // namespace gemma::cuda
