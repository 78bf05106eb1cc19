// Dispatch and threading for the matmul kernels: split output rows in contiguous chunks
// (one ascending stream of weights per thread) and run the active ISA's kernel on each.
#include "kernels/matmul.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "quant/quant.h"

namespace gemma {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::Q8: return "int8";
    case DType::Q4: return "int4";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "f32") return DType::F32;
  if (n == "bf16") return DType::BF16;
  if (n == "f16") return DType::F16;
  if (n == "int8") return DType::Q8;
  if (n == "int4") return DType::Q4;
  throw std::invalid_argument("unknown dtype '" + n + "' (expected f32, bf16, f16, int8 or int4)");
}

int64_t row_bytes(DType dtype, int64_t cols) { return quant::row_bytes(dtype, cols); }

void dequantize_row(const WeightView& W, int64_t r, float* out) {
  quant::dequantize_row(W.dtype, W.data + r * W.row_bytes, W.cols, out);
}

namespace avx2 {
void matmul_rows(const WeightView&, const float*, int64_t, float*, int64_t, int64_t, int64_t);
}
namespace avx512 {
void matmul_rows(const WeightView&, const float*, int64_t, float*, int64_t, int64_t, int64_t);
}
namespace neon {
void matmul_rows(const WeightView&, const float*, int64_t, float*, int64_t, int64_t, int64_t);
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
    default: break;
  }
  throw std::invalid_argument(std::string("no matmul kernel compiled for ISA ") + isa_name(isa));
}

void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                int n_threads) {
  MatmulRowsFn fn = kernel_for(isa);
  const int64_t rows = W.rows;
  if (n_threads <= 1 || rows < 64) {
    fn(W, X, T, Y, ldy, 0, rows);
    return;
  }
  // Contiguous chunks, rounded to multiples of 16 rows so SIMD kernels can tile.
  const int nt = n_threads;
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    const int n = omp_get_num_threads();
    int64_t per = (rows + n - 1) / n;
    per = (per + 15) / 16 * 16;
    const int64_t r0 = std::min<int64_t>(rows, per * tid);
    const int64_t r1 = std::min<int64_t>(rows, r0 + per);
    if (r0 < r1) fn(W, X, T, Y, ldy, r0, r1);
  }
}

void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, int n_threads) {
  matmul_isa(active_isa(), W, X, T, Y, ldy, n_threads);
}

}  // namespace gemma
