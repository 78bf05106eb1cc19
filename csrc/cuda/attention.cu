// The KV cache on the GPU: storing a chunk's keys and values (f32, bf16 or f16 elements, the
// CPU's conversions bit for bit), and attention over them, sliding-window rings included.
//
// Attention: one thread block per (query token, head). Each warp takes keys j = warp, warp +
// nwarps, ... and computes q . k_j with lanes over the head dimension (a fixed butterfly sum);
// the scores go to a global scratch row; then max and sum of exp in a fixed block reduction, and
// out_i = sum_j p_j v_ji over keys in position order (one thread per i: coalesced), divided by
// the sum. A (token, head) output depends only on its query and the keys it sees: the same bits
// whether the token comes alone or in a chunk.
#include <stdexcept>

#include "cuda/check.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace gemma::cuda {

namespace {

constexpr int kAttnThreads = 128;

template <int kDt>
__device__ __forceinline__ float load_kv(const void* base, int64_t i) {
  if (kDt == 0) return reinterpret_cast<const float*>(base)[i];
  if (kDt == 1) return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
  return f16_bits_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
}

template <int kDt>
__global__ void store_kv_kernel(DevKvLayer kv, int kv_dim, int pos0, int n, const float* k, const float* v,
                                int64_t ld) {
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= int64_t(n) * kv_dim) return;
  const int64_t t = id / kv_dim, i = id % kv_dim;
  const int64_t at = int64_t((pos0 + t) % kv.cap) * kv.stride + i;
  const float kx = k[t * ld + i], vx = v[t * ld + i];
  if (kDt == 0) {
    reinterpret_cast<float*>(kv.k)[at] = kx;
    reinterpret_cast<float*>(kv.v)[at] = vx;
  } else if (kDt == 1) {
    reinterpret_cast<uint16_t*>(kv.k)[at] = float_to_bf16_bits(kx);
    reinterpret_cast<uint16_t*>(kv.v)[at] = float_to_bf16_bits(vx);
  } else {
    reinterpret_cast<uint16_t*>(kv.k)[at] = float_to_f16_bits_sat(kx);
    reinterpret_cast<uint16_t*>(kv.v)[at] = float_to_f16_bits_sat(vx);
  }
}

template <int kDt>
__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(DevKvLayer kv, AttentionParams p, const float* q, int64_t ldq, int pos0, float* out, int64_t ldo,
                     float* scores, int64_t scores_stride) {
  extern __shared__ float qs[];  // [head_dim]
  __shared__ float red[32];
  const int t = blockIdx.x, h = blockIdx.y;
  const int hd = p.head_dim, g = h / (p.n_heads / p.n_kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int pos = pos0 + t;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int nk = pos - lo + 1;
  float* s = scores + (int64_t(t) * p.n_heads + h) * scores_stride;
  const float* qh = q + int64_t(t) * ldq + int64_t(h) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qh[i];
  __syncthreads();

  const float inv_cap = p.softcap > 0.f ? 1.0f / p.softcap : 0.f;
  for (int j = warp; j < nk; j += nwarps) {
    const int64_t row = int64_t((lo + j) % kv.cap) * kv.stride + int64_t(g) * hd;
    float part = 0.f;
    for (int i = lane; i < hd; i += 32) part = fmaf(qs[i], load_kv<kDt>(kv.k, row + i), part);
    part = warp_sum(part);
    if (lane == 0) {
      float sc = part * p.query_scale;
      if (p.softcap > 0.f) sc = p.softcap * tanhf(sc * inv_cap);
      s[j] = sc;
    }
  }
  __syncthreads();  // the scores are visible to the whole block

  const float inv = block_exp_in_place(s, nk, red);  // s[j] = exp(score - max), visible to all

  float* o = out + int64_t(t) * ldo + int64_t(h) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < nk; ++j) {
      const int64_t row = int64_t((lo + j) % kv.cap) * kv.stride + int64_t(g) * hd;
      acc = fmaf(s[j], load_kv<kDt>(kv.v, row + i), acc);
    }
    o[i] = acc * inv;
  }
}

}  // namespace

void store_kv(const DevKvLayer& kv, int kv_dim, int pos0, int n, const float* k, const float* v, int64_t ld,
              cudaStream_t s) {
  const int64_t total = int64_t(n) * kv_dim;
  if (total <= 0) return;
  const unsigned grid = grid_for(total, 256);
  switch (kv.dtype) {
    case 0: store_kv_kernel<0><<<grid, 256, 0, s>>>(kv, kv_dim, pos0, n, k, v, ld); break;
    case 1: store_kv_kernel<1><<<grid, 256, 0, s>>>(kv, kv_dim, pos0, n, k, v, ld); break;
    case 2: store_kv_kernel<2><<<grid, 256, 0, s>>>(kv, kv_dim, pos0, n, k, v, ld); break;
    default: throw std::invalid_argument("cuda::store_kv: unsupported KV element type");
  }
  GEMMA_CUDA_LAUNCHED("store_kv");
}

void attention(const DevKvLayer& kv, const AttentionParams& p, const float* q, int64_t ldq, int n, int pos0,
               float* out, int64_t ldo, float* scores, int64_t scores_stride, cudaStream_t s) {
  if (n <= 0) return;
  const dim3 grid(unsigned(n), unsigned(p.n_heads));
  const size_t smem = size_t(p.head_dim) * sizeof(float);
  switch (kv.dtype) {
    case 0: attention_kernel<0><<<grid, kAttnThreads, smem, s>>>(kv, p, q, ldq, pos0, out, ldo, scores, scores_stride); break;
    case 1: attention_kernel<1><<<grid, kAttnThreads, smem, s>>>(kv, p, q, ldq, pos0, out, ldo, scores, scores_stride); break;
    case 2: attention_kernel<2><<<grid, kAttnThreads, smem, s>>>(kv, p, q, ldq, pos0, out, ldo, scores, scores_stride); break;
    default: throw std::invalid_argument("cuda::attention: unsupported KV element type");
  }
  GEMMA_CUDA_LAUNCHED("attention");
}

}  // namespace gemma::cuda
