// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; dispatched only on CPUs that
// have them). int8/int4 weights: matmul_quant_avx2.inc (8 rows per vector); float weights: the
// shared tiles of matmul_x86.inc.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::avx2 {
namespace {

// 16 ymm registers: float tile 4x3.
#define GEMMA_FR 4
#define GEMMA_FT 3
#include "kernels/matmul_quant_avx2.inc"
#include "kernels/matmul_quant_driver.inc"
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx2
