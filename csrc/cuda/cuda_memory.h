// Device memory of one GPU as a MemorySpace (backend/memory.h): where a CudaBackend's Workspace
// and KV caches live. Every operation is ordered on the backend's stream, so a copy or free
// never overtakes a kernel that still uses the buffer.
#pragma once
#include <cuda_runtime.h>

#include "backend/memory.h"

namespace gemma::cuda {

class CudaMemory final : public MemorySpace {
 public:
  CudaMemory(int device, cudaStream_t stream) : device_(device), stream_(stream) {}

  bool is_host() const override { return false; }
  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void to_host(void* dst, const void* src, size_t bytes) override;

 private:
  int device_;
  cudaStream_t stream_;
};

}  // namespace gemma::cuda
