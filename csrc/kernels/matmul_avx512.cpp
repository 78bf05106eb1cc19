// AVX-512 VNNI kernels (compiled with avx512f/bw/vl/dq/vnni; dispatched only on CPUs that have
// them, e.g. Zen 4/5, Ice Lake and later). int8/int4 weights: matmul_quant_avx512.inc (zmm,
// vpdpbusd, 16 rows per vector). Float weights: the shared 256-bit tiles of matmul_x86.inc
// (EVEX gives 32 ymm registers, so the tiles are larger than AVX2's).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::avx512 {
namespace {

#define GEMMA_FR 4
#define GEMMA_FT 4
#include "kernels/matmul_quant_avx512.inc"
#include "kernels/matmul_quant_driver.inc"
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx512
