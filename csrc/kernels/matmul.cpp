// Dispatch and threading for the matmul kernels: split output rows in contiguous chunks
// (one region of weights per thread) and run the active ISA's kernel on each.
#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <vector>
#include <stdexcept>
#include <string>

#include "backend/cpu/thread_pool.h"
#include "kernels/matmul_kquant.h"
#include "quant/kquant.h"
#include "quant/quant.h"

namespace gemma {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::Q8: return "int8";
    case DType::Q4: return "int4";
    case DType::Q5_0: return "q5_0";
    case DType::Q4_K: return "q4_k";
    case DType::Q6_K: return "q6_k";
    case DType::Q5_K: return "q5_k";
    case DType::Q4_1: return "q4_1";
    case DType::Q5_1: return "q5_1";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "f32") return DType::F32;
  if (n == "bf16") return DType::BF16;
  if (n == "f16") return DType::F16;
  if (n == "int8") return DType::Q8;
  if (n == "int4") return DType::Q4;
  if (n == "q5_0") return DType::Q5_0;
  if (n == "q4_k") return DType::Q4_K;
  if (n == "q6_k") return DType::Q6_K;
  if (n == "q5_k") return DType::Q5_K;
  if (n == "q4_1") return DType::Q4_1;
  if (n == "q5_1") return DType::Q5_1;
  throw std::invalid_argument("unknown dtype '" + n +
                              "' (expected f32, bf16, f16, int8, int4, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k)");
}

const char* layout_name(Layout l) { return l == Layout::Rows16 ? "rows16" : "rows"; }

Layout layout_from_name(const std::string& n) {
  if (n == "rows") return Layout::Rows;
  if (n == "rows16") return Layout::Rows16;
  throw std::invalid_argument("unknown tensor layout '" + n + "' (expected rows or rows16)");
}

int64_t row_bytes(DType dtype, int64_t cols) { return quant::row_bytes(dtype, cols); }

const uint8_t* plain_row(const WeightView& W, int64_t r, uint8_t* buf) {
  if (W.layout == Layout::Rows) return W.data + r * W.row_bytes;
  quant::gather_row16(W.dtype, W.data, W.cols, r, buf);
  return buf;
}

void dequantize_row(const WeightView& W, int64_t r, float* out) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < size_t(W.row_bytes)) buf.resize(size_t(W.row_bytes));
  quant::dequantize_row(W.dtype, plain_row(W, r, buf.data()), W.cols, out);
}

static MatmulRowsFn kernel_for(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return scalar::matmul_rows;
#if defined(GEMMA_HAVE_AVX2)
    case Isa::Avx2: return avx2::matmul_rows;
#endif
#if defined(GEMMA_HAVE_AVX512)
    case Isa::Avx512: return avx512::matmul_rows;
#endif
#if defined(GEMMA_HAVE_NEON)
    case Isa::Neon: return neon::matmul_rows;
#endif
#if defined(GEMMA_HAVE_AMX)
    case Isa::Amx: return amx::matmul_rows;
#endif
    default: break;
  }
  throw std::invalid_argument(std::string("no matmul kernel compiled for ISA ") + isa_name(isa));
}

// The native GGUF formats' kernels (matmul_kquant_*.cpp).
static MatmulRowsFn kquant_kernel_for(Isa isa) {
  switch (vector_isa(isa)) {
    case Isa::Scalar: return scalar::matmul_rows_kquant;
#if defined(GEMMA_HAVE_AVX2)
    case Isa::Avx2: return avx2::matmul_rows_kquant;
#endif
#if defined(GEMMA_HAVE_AVX512)
    case Isa::Avx512: return avx512::matmul_rows_kquant;
#endif
#if defined(GEMMA_HAVE_NEON)
    case Isa::Neon: return neon::matmul_rows_kquant;
#endif
    default: break;
  }
  throw std::invalid_argument(std::string("no matmul kernel compiled for ISA ") + isa_name(isa));
}

// Same rounding as the weight quantiser (round half to even), so every ISA sees the same ints.
static inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d,
                          int32_t* s) {
  const int64_t nb = quant::n_blocks(cols);
  constexpr int B = quant::kBlock;
  for (int64_t t = 0; t < T; ++t) {
    const float* x = X + t * cols;
    for (int64_t b = 0; b < nb; ++b) {
      const int n = int(std::min<int64_t>(B, cols - b * B));
      const float* xb = x + b * B;
      float amax = 0.f;
      for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float id = amax > 0.f ? 127.f / amax : 0.f;
      int8_t* qb = q + (t * nb + b) * B;
      int32_t sum = 0;
      for (int j = 0; j < B; ++j) {
        // min() guards against x * (127 / amax) rounding up past 127 by an ulp.
        const float v = j < n ? std::min(127.f, round_even(std::fabs(xb[j]) * id)) : 0.f;
        const int iv = int(j < n && xb[j] < 0.f ? -v : v);
        qb[j] = int8_t(iv);
        sum += iv;
      }
      d[t * nb + b] = amax / 127.f;
      s[t * nb + b] = sum;
    }
  }
}

void quantize_activations_isa(Isa isa, const float* X, int64_t T, int64_t cols, int8_t* q, float* d,
                              int32_t* s) {
#if defined(GEMMA_HAVE_AVX2)
  if (isa == Isa::Avx2 || vector_isa(isa) == Isa::Avx512) return avx2::quantize_activations(X, T, cols, q, d, s);
#endif
#if defined(GEMMA_HAVE_NEON)
  if (isa == Isa::Neon) return neon::quantize_activations(X, T, cols, q, d, s);
#endif
  (void)isa;
  quantize_activations(X, T, cols, q, d, s);
}

void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                ThreadPool& pool) {
  // GGUF Q5_0 runs in the x86 lane = row kernels (signed levels, like int8); the other native
  // formats, and Q5_0 elsewhere, in matmul_kquant_*.
  const bool lane_row_q5_0 = W.dtype == DType::Q5_0 && (isa == Isa::Avx2 || vector_isa(isa) == Isa::Avx512);
  MatmulRowsFn fn = quant::is_native_gguf(W.dtype) && !lane_row_q5_0 ? kquant_kernel_for(isa) : kernel_for(isa);
  const int64_t rows = W.rows;
  // Quantised weights: quantise the activations once here, not per row chunk or per thread.
  // Scratch grows once per thread and is reused: no allocation in the token loop.
  QuantizedActs xq;
  const QuantizedActs* xqp = nullptr;
  if (is_quantized(W.dtype)) {
    thread_local std::vector<int8_t> qbuf;
    thread_local std::vector<float> dbuf;
    thread_local std::vector<int32_t> sbuf;
    xq.nb = quant::n_blocks(W.cols);
    const size_t nq = size_t(T * xq.nb * quant::kBlock), nd = size_t(T * xq.nb);
    if (qbuf.size() < nq) qbuf.resize(nq);
    if (dbuf.size() < nd) dbuf.resize(nd), sbuf.resize(nd);
    // (Pointers, not the thread_local vectors: inside a worker those names are its own.)
    const int64_t nb = xq.nb, K = W.cols;
    int8_t* q = qbuf.data();
    float* d = dbuf.data();
    int32_t* sums = sbuf.data();
    const auto quantize_tokens = [&](int64_t t0, int64_t t1) {
      quantize_activations_isa(isa, X + t0 * K, t1 - t0, K, q + t0 * nb * quant::kBlock, d + t0 * nb,
                               sums + t0 * nb);
    };
    if (T >= 16) {
      pool.parallel_for(T, 1, quantize_tokens);
    } else {
      quantize_tokens(0, T);
    }
    xq.q = qbuf.data();
    xq.d = dbuf.data();
    xq.s = sbuf.data();
    xqp = &xq;
  }
  // Small products are not worth waking threads for.
  if (pool.size() <= 1 || rows < 64 || rows * W.cols * T < (1 << 16)) {
    fn(W, X, xqp, T, Y, ldy, 0, rows);
    return;
  }
  // Contiguous chunks of whole 16-row groups (the SIMD kernels' lane groups), one per thread.
  pool.parallel_for(rows, 16, [&](int64_t r0, int64_t r1) { fn(W, X, xqp, T, Y, ldy, r0, r1); });
}

void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                int n_threads) {
  ThreadPool pool(n_threads);
  matmul_isa(isa, W, X, T, Y, ldy, pool);
}

void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, ThreadPool& pool) {
  matmul_isa(active_isa(), W, X, T, Y, ldy, pool);
}

}  // namespace gemma
