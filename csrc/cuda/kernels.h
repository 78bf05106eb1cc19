// Host-side launchers of the CUDA kernels (matmul.cu, elementwise.cu, attention.cu), each the
// device version of one Backend op (backend/backend.h) with the same arguments, all pointers in
// device memory, all work queued on `stream`. Numerics (docs/cuda.md):
//  - int8/int4 matmuls follow kernels/quant_canonical.h exactly (activations quantised as
//    quantize_activations does, an exact integer dot per block, one fma per block in ascending
//    order): the same bits as the CPU's scalar reference;
//  - float-weight matmuls, norms, softmax and attention sum in a fixed order of their own (lane-
//    strided partials, then a fixed tree), within the bounds tests/cpp/backend_ops.h derives;
//  - every output depends only on its own token's inputs (never on how many tokens are in the
//    call): the determinism rule of DESIGN.md.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/backend.h"
#include "kernels/dtype.h"

namespace gemma::cuda {

// A weight matrix in device memory. Float formats (F32/BF16/F16): `data` holds rows of
// row_bytes. Q8/Q4: the .gcpp's blocks split in two arrays so that every block's levels are
// 16-byte aligned for vector loads: scales [rows][nb] (f16 bits) and levels [rows][nb][32] (Q8,
// int8) or [rows][nb][16] (Q4, byte j = q[j] | q[j + 16] << 4, w = d * (q - 8)).
struct DevMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t row_bytes = 0;           // float formats
  const uint8_t* data = nullptr;   // float formats
  const uint16_t* scales = nullptr;  // Q8/Q4
  const uint8_t* levels = nullptr;   // Q8/Q4
  int64_t nb = 0;                    // Q8/Q4: blocks of 32 per row
};

// One layer of a KV cache in device memory: slot s of K at k + s * stride elements (kv_dim
// elements a slot, KV head g at + g * head_dim); dtype 0 f32, 1 bf16, 2 f16.
struct DevKvLayer {
  int dtype = 0;
  void* k = nullptr;
  void* v = nullptr;
  int64_t stride = 0;
  int cap = 0;
};

// X quantised to int8 blocks of 32 with a scale each (kernels/matmul.h: quantize_activations):
// q [T][nb * 32], d [T][nb].
void quantize_acts(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, cudaStream_t s);
// Y[t, r] = sum_k X[t, k] W[r, k]; for Q8/Q4, xq/xd from quantize_acts (else unused).
void matmul(const DevMatrix& W, const float* X, const int8_t* xq, const float* xd, int64_t T, float* Y,
            int64_t ldy, cudaStream_t s);

void embed(const DevMatrix& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx, cudaStream_t s);
void rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim, const float* w,
              float eps, cudaStream_t s);
void rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs, cudaStream_t s);
void geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx, float* out,
           int64_t ldo, cudaStream_t s);
void softmax(float* x, int64_t ldx, int n, int len, cudaStream_t s);
void soft_cap(float* x, int64_t count, float cap, cudaStream_t s);
void add(float* x, const float* y, int64_t count, cudaStream_t s);

void store_kv(const DevKvLayer& kv, int kv_dim, int pos0, int n, const float* k, const float* v, int64_t ld,
              cudaStream_t s);
// scores: n * p.n_heads rows of scores_stride floats (>= the most keys a query sees).
void attention(const DevKvLayer& kv, const AttentionParams& p, const float* q, int64_t ldq, int n, int pos0,
               float* out, int64_t ldo, float* scores, int64_t scores_stride, cudaStream_t s);

}  // namespace gemma::cuda
