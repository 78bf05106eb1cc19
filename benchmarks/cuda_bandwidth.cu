// DRAM bandwidth of GPU 0 by a device-to-device cudaMemcpy of 1 GiB (read + write = 2 GiB moved),
// best of 10: the roofline benchmarks/cuda_check.sh divides decode speed by. Prints GB/s.
#include <cuda_runtime.h>

#include <cstdio>

int main() {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
    std::fprintf(stderr, "cuda_bandwidth: cudaMalloc failed\n");
    return 1;
  }
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);  // warm-up
  float best = 1e30f;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(t0);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(t1);
    cudaEventSynchronize(t1);
    float ms = 0;
    cudaEventElapsedTime(&ms, t0, t1);
    if (ms < best) best = ms;
  }
  std::printf("%.1f\n", 2.0 * double(n) / (double(best) * 1e-3) / 1e9);
  return 0;
}
