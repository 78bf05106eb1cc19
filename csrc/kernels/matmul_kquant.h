// Matmul kernels for the native GGUF block formats (Q5_0, Q4_K, Q5_K, Q6_K; csrc/quant/kquant.h).
// Same contract as MatmulRowsFn (matmul.h): rows [r0, r1) of Y = X W^T, with X quantised to int8
// 32-blocks (QuantizedActs) once per matmul.
//
// Every kernel computes, per output element, integer dot products of a 32-weight sub-block's
// levels with the activation block's int8 values (exact, in int32), then scales them in float:
//
//   Q5_0:  y += float(sum_j lvl_j qx_j) * (d * dx)
//   Q4_1, Q5_1:  y += float(sum_j q_j qx_j) * (d * dx) + m * (dx * float(s))
//   Q6_K:  y += float(sum_j sc_j lvl_j qx_j) * (d * dx)          sc_j: int8, per 16 weights
//   Q4_K, Q5_K:  y += float(sum_j q_j qx_j) * ((d * sc) * dx) - (dmin * m) * (dx * float(s))
//                                                               s = sum_j qx_j (QuantizedActs::s)
//
// DETERMINISM: a kernel computes each (row, token) element with the same instructions in the same
// order whether it is part of a T = 1 (decode) or a T > 1 (prefill) call, and threads split rows
// only, so a token's outputs do not depend on the batch or the thread count (tested per ISA).
// ISAs differ from each other only in the order of the float additions.
#pragma once
#include "kernels/matmul.h"

namespace gemma {

#define GEMMA_DECLARE_KQUANT_ROWS(ns)                                                               \
  namespace ns {                                                                                    \
  void matmul_rows_kquant(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, \
                          float* Y, int64_t ldy, int64_t r0, int64_t r1);                          \
  }
GEMMA_DECLARE_KQUANT_ROWS(scalar)
GEMMA_DECLARE_KQUANT_ROWS(avx2)
GEMMA_DECLARE_KQUANT_ROWS(avx512)
GEMMA_DECLARE_KQUANT_ROWS(neon)
#undef GEMMA_DECLARE_KQUANT_ROWS

}  // namespace gemma
