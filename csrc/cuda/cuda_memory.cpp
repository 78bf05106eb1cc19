#include "cuda/cuda_memory.h"

#include "cuda/check.h"

namespace gemma::cuda {

void* CudaMemory::alloc(size_t bytes) {
  if (!bytes) return nullptr;
  GEMMA_CUDA_CHECK(cudaSetDevice(device_));
  void* p = nullptr;
  GEMMA_CUDA_CHECK(cudaMalloc(&p, bytes));
  GEMMA_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  return p;
}

void CudaMemory::free(void* p) {
  if (!p) return;
  // Called from destructors: errors are not thrown (the buffer is gone either way).
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);  // no kernel still reads or writes it
  cudaFree(p);
}

void CudaMemory::copy(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  GEMMA_CUDA_CHECK(cudaSetDevice(device_));
  GEMMA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaMemory::to_host(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  GEMMA_CUDA_CHECK(cudaSetDevice(device_));
  GEMMA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  GEMMA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // also where an earlier kernel's fault surfaces
}

}  // namespace gemma::cuda
