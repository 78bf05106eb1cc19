// Y = X W^T on the GPU: one warp per output row, up to kTile tokens per warp, so a weight row is
// read once per kTile tokens (decode, T = 1, reads each weight once: a memory-bound GEMV with
// coalesced loads; prefill re-reads the weights every kTile tokens, from L2 when they fit).
//
// int8/int4 (kernels/quant_canonical.h, bit for bit the CPU's scalar reference): lane l holds
// weight block b0 + l of the row and computes its exact integer dot with each token's activation
// block (dp4a); then the warp walks the 32 blocks in ascending order, every lane doing the same
// acc = fma(float(idot_b), dw_b * dx_b, acc) with the block's values broadcast by a shuffle, so
// the fma chain is exactly the reference's. Float weights: lane l sums k = l, l + 32, ... in
// order (fma), then a fixed butterfly over the lanes.
#include "cuda/check.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace gemma::cuda {

namespace {

constexpr int kTile = 8;         // tokens per warp
constexpr int kWarpsPerBlock = 8;  // rows per thread block

// kernels/matmul.cpp: quantize_activations, the same bits: amax over the block, id = 127 / amax,
// q = sign(x) * min(127, rint(|x| * id)) (rint: round half to even), d = amax / 127. One warp a block.
__global__ void quantize_acts_kernel(const float* X, int64_t T, int64_t cols, int64_t nb, int8_t* q, float* d) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= T * nb) return;  // uniform over the warp
  const int64_t t = w / nb, b = w % nb, k = b * 32 + lane;
  const float x = k < cols ? X[t * cols + k] : 0.f;
  const float ax = fabsf(x);
  const float amax = warp_max(ax);
  const float id = amax > 0.f ? 127.f / amax : 0.f;
  const float v = fminf(127.f, rintf(__fmul_rn(ax, id)));
  const int iv = x < 0.f ? -int(v) : int(v);
  q[w * 32 + lane] = int8_t(iv);
  if (lane == 0) d[w] = amax / 127.f;
}

template <bool kQ4>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matmul_quant_kernel(DevMatrix W, const int8_t* xq, const float* xd, int64_t T, float* Y, int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t t0 = int64_t(blockIdx.y) * kTile;
  if (r >= W.rows) return;  // uniform over the warp
  const int nt = int(T - t0 < kTile ? T - t0 : kTile);
  const int64_t nb = W.nb;
  const uint16_t* scales = W.scales + r * nb;
  const uint8_t* levels = W.levels + r * nb * (kQ4 ? 16 : 32);
  float acc[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) acc[t] = 0.f;
  for (int64_t b0 = 0; b0 < nb; b0 += 32) {
    const int64_t b = b0 + lane;
    float idot[kTile], prod[kTile];
#pragma unroll
    for (int t = 0; t < kTile; ++t) idot[t] = 0.f, prod[t] = 0.f;
    if (b < nb) {
      const float dw = f16_bits_to_float(scales[b]);
      int w[8];  // the block's 32 signed levels, 4 a word
      if (kQ4) {
        const int4 p = *reinterpret_cast<const int4*>(levels + b * 16);
        const int packed[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          // low nibbles: levels 4i..4i+3; high nibbles: 16+4i..; each byte q in [0, 15] -> q - 8
          w[i] = int(__vsub4(unsigned(packed[i]) & 0x0f0f0f0fu, 0x08080808u));
          w[4 + i] = int(__vsub4((unsigned(packed[i]) >> 4) & 0x0f0f0f0fu, 0x08080808u));
        }
      } else {
        const int4* p = reinterpret_cast<const int4*>(levels + b * 32);
        const int4 a = p[0], c = p[1];
        w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = c.x, w[5] = c.y, w[6] = c.z, w[7] = c.w;
      }
#pragma unroll
      for (int t = 0; t < kTile; ++t) {
        if (t < nt) {
          const int64_t at = (t0 + t) * nb + b;
          const int4* xp = reinterpret_cast<const int4*>(xq + at * 32);
          const int4 a = xp[0], c = xp[1];
          int dot = 0;
          dot = __dp4a(w[0], a.x, dot);
          dot = __dp4a(w[1], a.y, dot);
          dot = __dp4a(w[2], a.z, dot);
          dot = __dp4a(w[3], a.w, dot);
          dot = __dp4a(w[4], c.x, dot);
          dot = __dp4a(w[5], c.y, dot);
          dot = __dp4a(w[6], c.z, dot);
          dot = __dp4a(w[7], c.w, dot);
          idot[t] = __int2float_rn(dot);  // exact: |dot| < 2^24
          prod[t] = __fmul_rn(dw, xd[at]);  // rounded on its own, never fused
        }
      }
    }
    const int m = int(nb - b0 < 32 ? nb - b0 : 32);
    for (int i = 0; i < m; ++i) {
#pragma unroll
      for (int t = 0; t < kTile; ++t)
        acc[t] = fmaf(__shfl_sync(kFullMask, idot[t], i), __shfl_sync(kFullMask, prod[t], i), acc[t]);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt) Y[(t0 + t) * ldy + r] = acc[t];
  }
}

template <DType kDt>
__device__ __forceinline__ float load_weight(const uint8_t* row, int64_t k) {
  if (kDt == DType::F32) return reinterpret_cast<const float*>(row)[k];
  if (kDt == DType::BF16) return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
  return f16_bits_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
}

template <DType kDt>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matmul_float_kernel(DevMatrix W, const float* X, int64_t T, float* Y, int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t t0 = int64_t(blockIdx.y) * kTile;
  if (r >= W.rows) return;
  const int nt = int(T - t0 < kTile ? T - t0 : kTile);
  const int64_t K = W.cols;
  const uint8_t* row = W.data + r * W.row_bytes;
  float part[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) part[t] = 0.f;
  for (int64_t k = lane; k < K; k += 32) {
    const float w = load_weight<kDt>(row, k);
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt) part[t] = fmaf(w, X[(t0 + t) * K + k], part[t]);
  }
#pragma unroll
  for (int t = 0; t < kTile; ++t) part[t] = warp_sum(part[t]);
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt) Y[(t0 + t) * ldy + r] = part[t];
  }
}

}  // namespace

void quantize_acts(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, cudaStream_t s) {
  const int64_t nb = (cols + 31) / 32;
  if (T <= 0 || nb <= 0) return;
  quantize_acts_kernel<<<grid_for(T * nb * 32, 256), 256, 0, s>>>(X, T, cols, nb, q, d);
  GEMMA_CUDA_LAUNCHED("quantize_acts");
}

void matmul(const DevMatrix& W, const float* X, const int8_t* xq, const float* xd, int64_t T, float* Y,
            int64_t ldy, cudaStream_t s) {
  if (T <= 0 || W.rows <= 0) return;
  const dim3 grid(unsigned((W.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned((T + kTile - 1) / kTile));
  const int threads = kWarpsPerBlock * 32;
  switch (W.dtype) {
    case DType::Q8: matmul_quant_kernel<false><<<grid, threads, 0, s>>>(W, xq, xd, T, Y, ldy); break;
    case DType::Q4: matmul_quant_kernel<true><<<grid, threads, 0, s>>>(W, xq, xd, T, Y, ldy); break;
    case DType::F32: matmul_float_kernel<DType::F32><<<grid, threads, 0, s>>>(W, X, T, Y, ldy); break;
    case DType::BF16: matmul_float_kernel<DType::BF16><<<grid, threads, 0, s>>>(W, X, T, Y, ldy); break;
    case DType::F16: matmul_float_kernel<DType::F16><<<grid, threads, 0, s>>>(W, X, T, Y, ldy); break;
    default: throw std::invalid_argument("cuda::matmul: unsupported weight dtype");
  }
  GEMMA_CUDA_LAUNCHED("matmul");
}

}  // namespace gemma::cuda
