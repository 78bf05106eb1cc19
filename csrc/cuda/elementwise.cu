// The per-token ops on the GPU: embedding lookup, RMSNorm, RoPE, GeGLU, softmax, soft-cap,
// residual add. Same formulas as the CPU's (kernels/ops.cpp, kernels/vec.h), with the CUDA math
// library's tanhf/erff/expf (a few ulps, inside the tolerances of tests/cpp/backend_ops.h).
#include <stdexcept>

#include "cuda/check.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace gemma::cuda {

namespace {

// x[t] = table[tokens[t]] * scale, dequantised exactly as quant::dequantize_row: d * q, then
// the product by scale (two roundings, as on the CPU). One block a token.
__global__ void embed_kernel(DevMatrix E, const int32_t* tokens, float scale, float* x, int64_t ldx) {
  const int t = blockIdx.x;
  const int64_t r = tokens[t];
  float* xt = x + t * ldx;
  for (int64_t k = threadIdx.x; k < E.cols; k += blockDim.x) {
    float v;
    switch (E.dtype) {
      case DType::F32: v = reinterpret_cast<const float*>(E.data + r * E.row_bytes)[k]; break;
      case DType::BF16: v = bf16_bits_to_float(reinterpret_cast<const uint16_t*>(E.data + r * E.row_bytes)[k]); break;
      case DType::F16: v = f16_bits_to_float(reinterpret_cast<const uint16_t*>(E.data + r * E.row_bytes)[k]); break;
      case DType::Q8: {
        const int64_t b = k / 32;
        const float d = f16_bits_to_float(E.scales[r * E.nb + b]);
        v = __fmul_rn(d, float(reinterpret_cast<const int8_t*>(E.levels)[(r * E.nb + b) * 32 + k % 32]));
        break;
      }
      default: {  // Q4
        const int64_t b = k / 32;
        const int j = int(k % 32);
        const float d = f16_bits_to_float(E.scales[r * E.nb + b]);
        const uint8_t byte = E.levels[(r * E.nb + b) * 16 + (j % 16)];
        const int q = j < 16 ? (byte & 15) : (byte >> 4);
        v = __fmul_rn(d, float(q - 8));
        break;
      }
    }
    xt[k] = __fmul_rn(v, scale);
  }
}

// One block a row (t, h): out = x * (1 / sqrt(mean(x^2) + eps)) * w.
__global__ void rms_norm_kernel(const float* x, int64_t ldx, float* out, int64_t ldo, int heads, int dim,
                                const float* w, float eps) {
  __shared__ float red[32];
  const int t = blockIdx.x / heads, h = blockIdx.x % heads;
  const float* xr = x + t * ldx + int64_t(h) * dim;
  float* o = out + t * ldo + int64_t(h) * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, red);
  const float inv = 1.f / sqrtf(ss / float(dim) + eps);
  // Each thread writes only the elements it read: safe in place (out == x).
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// Rotate-half RoPE, one thread per (t, h, i < half): a' = a c - b s, b' = b c + a s.
__global__ void rope_kernel(float* x, int64_t ldx, int n, int heads, int hd, const float* cs, int64_t ldcs) {
  const int half = hd / 2;
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= int64_t(n) * heads * half) return;
  const int i = int(id % half);
  const int h = int((id / half) % heads);
  const int64_t t = id / (int64_t(half) * heads);
  float* xh = x + t * ldx + int64_t(h) * hd;
  const float c = cs[t * ldcs + i], s = cs[t * ldcs + half + i];
  const float a = xh[i], b = xh[i + half];
  xh[i] = a * c - b * s;
  xh[i + half] = b * c + a * s;
}

__global__ void geglu_kernel(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx,
                             float* out, int64_t ldo) {
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= int64_t(n) * dim) return;
  const int64_t t = id / dim, i = id % dim;
  const float g = gate[t * ld_in + i], u = up[t * ld_in + i];
  float act;
  if (tanh_approx) {
    act = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
  } else {
    act = 0.5f * g * (1.0f + erff(g * 0.7071067811865476f));
  }
  out[t * ldo + i] = act * u;
}

// One block a row: p = exp(x - max) / sum.
__global__ void softmax_kernel(float* x, int64_t ldx, int len) {
  __shared__ float red[32];
  float* r = x + int64_t(blockIdx.x) * ldx;
  const float inv = block_exp_in_place(r, len, red);
  for (int i = threadIdx.x; i < len; i += blockDim.x) r[i] *= inv;
}

__global__ void soft_cap_kernel(float* x, int64_t count, float cap, float inv) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] = cap * tanhf(x[i] * inv);
}

__global__ void add_kernel(float* x, const float* y, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] += y[i];
}

}  // namespace

void embed(const DevMatrix& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx, cudaStream_t s) {
  if (n <= 0) return;
  const DType dt = table.dtype;
  if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16 && dt != DType::Q8 && dt != DType::Q4)
    throw std::invalid_argument("cuda::embed: unsupported table dtype");
  embed_kernel<<<unsigned(n), 256, 0, s>>>(table, tokens, scale, x, ldx);
  GEMMA_CUDA_LAUNCHED("embed");
}

void rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim, const float* w,
              float eps, cudaStream_t s) {
  if (n <= 0 || heads <= 0) return;
  rms_norm_kernel<<<unsigned(n * heads), 256, 0, s>>>(x, ldx, out, ldo, heads, dim, w, eps);
  GEMMA_CUDA_LAUNCHED("rms_norm");
}

void rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs, cudaStream_t s) {
  const int64_t total = int64_t(n) * heads * (head_dim / 2);
  if (total <= 0) return;
  rope_kernel<<<grid_for(total, 256), 256, 0, s>>>(x, ldx, n, heads, head_dim, cs, ldcs);
  GEMMA_CUDA_LAUNCHED("rope");
}

void geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx, float* out,
           int64_t ldo, cudaStream_t s) {
  const int64_t total = int64_t(n) * dim;
  if (total <= 0) return;
  geglu_kernel<<<grid_for(total, 256), 256, 0, s>>>(gate, up, ld_in, n, dim, tanh_approx, out, ldo);
  GEMMA_CUDA_LAUNCHED("geglu");
}

void softmax(float* x, int64_t ldx, int n, int len, cudaStream_t s) {
  if (n <= 0 || len <= 0) return;
  softmax_kernel<<<unsigned(n), 256, 0, s>>>(x, ldx, len);
  GEMMA_CUDA_LAUNCHED("softmax");
}

void soft_cap(float* x, int64_t count, float cap, cudaStream_t s) {
  if (count <= 0) return;
  soft_cap_kernel<<<grid_for(count, 256), 256, 0, s>>>(x, count, cap, 1.0f / cap);
  GEMMA_CUDA_LAUNCHED("soft_cap");
}

void add(float* x, const float* y, int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  add_kernel<<<grid_for(count, 256), 256, 0, s>>>(x, y, count);
  GEMMA_CUDA_LAUNCHED("add");
}

}  // namespace gemma::cuda
