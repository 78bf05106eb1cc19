// AVX-512 VNNI kernels for the native GGUF formats (compiled with avx512f/bw/vl/vnni; 256-bit EVEX
// vectors, 32 registers). The tiles are in matmul_kquant_x86.inc; the byte dot product is one
// vpdpbusd (unsigned levels times signed activations, groups of 4 into int32 lanes).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/matmul_kquant.h"
#include "quant/kquant.h"

namespace gemma::avx512 {
namespace {

struct KDot {
  static __m256i dot_us(__m256i u, __m256i x) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x); }
};

#define GEMMA_KR 4
#define GEMMA_KT 4
#include "kernels/matmul_kquant_x86.inc"

}  // namespace

void matmul_rows_kquant(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                        int64_t ldy, int64_t r0, int64_t r1) {
  kquant_rows_impl(W, *xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx512
