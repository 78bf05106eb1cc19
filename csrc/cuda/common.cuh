// Device helpers shared by the .cu files: element conversions that give the CPU's bits
// (kernels/dtype.h), and a fixed-order block reduction.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace gemma::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float f16_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_float(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

// kernels/dtype.h's f32_to_bf16: round to nearest even, NaN stays NaN.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// The KV cache's f16 store (model/kv_cache.cpp): saturate at +-65504, round to nearest even.
__device__ __forceinline__ uint16_t float_to_f16_bits_sat(float f) {
  return __half_as_ushort(__float2half_rn(fminf(fmaxf(f, -65504.f), 65504.f)));
}

// Sum over a warp in a fixed butterfly order (the same bits every run).
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// Sum (max) of one value per thread over the block (blockDim.x a multiple of 32, <= 1024),
// returned to every thread. `red` is __shared__ float[32]. A fixed order: deterministic.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : 0.f;
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : -INFINITY;
  return warp_max(t);
}

// The block's shared softmax step over v[0 .. n): v[i] = exp(v[i] - max) in place; returns
// 1 / sum of them. The final block_sum's __syncthreads also makes the exp'd values visible to the
// whole block. Every thread of the block must call it.
__device__ __forceinline__ float block_exp_in_place(float* v, int n, float* red) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, v[i]);
  m = block_max(m, red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(v[i] - m);
    v[i] = e;
    sum += e;
  }
  return 1.0f / block_sum(sum, red);
}

inline unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace gemma::cuda
