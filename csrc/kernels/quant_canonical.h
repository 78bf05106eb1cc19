// The one arithmetic every int8/int4 kernel computes, on every ISA and for every token count.
//
// Activations are quantised once per matmul (quantize_activations): token t, block b holds 32
// int8 levels qx with x ~= dx[t, b] * qx. A weight block holds 32 integer levels qw with
// w ~= dw[r, b] * qw (Q8: qw in [-127, 127]; Q4: nibble - 8 in [-8, 7]; GGUF Q5_0 on x86:
// [-16, 15]). Output (t, r) is
//
//   acc = 0
//   for b = 0 .. nb-1 (ascending):
//     idot = sum_j qw[r, b, j] * qx[t, b, j]          exact int32 (|idot| <= 32*127*127 < 2^24)
//     acc  = fma(float(idot), dw[r, b] * dx[t, b], acc) one rounding; float(idot) is exact
//   Y[t, r] = acc
//
// idot is an exact integer, so a kernel may compute it any way it likes (vpdpbusd with an
// unsigned offset and a correction, vpmaddubsw with signs moved, sdot, lanes summed in any
// order); only the float steps are fixed: the same product dw * dx, one fused multiply-add per
// block, blocks in ascending order, one accumulator per output. Every kernel therefore returns
// the same bits as the scalar reference for each output, whatever T, the tile a token falls
// in, the thread count or the ISA: prefill, decode and prefix-cache reuse give the same logits.
#pragma once
#include <cmath>
#include <cstdint>

namespace gemma {

// The activations of one matmul as a SIMD kernel reads them (its own byte form of the levels,
// e.g. offset by 128 for an unsigned operand, with the scales and level sums of
// quantize_activations).
struct ActBlocks {
  const uint8_t* x;  // [T][nb * 32] level bytes
  const float* d;    // [T][nb] block scales dx
  const int32_t* s;  // [T][nb] sums of the levels
  int64_t nb;        // blocks per token
};

inline float canonical_block_step(int32_t idot, float dw, float dx, float acc) {
  return std::fma(float(idot), dw * dx, acc);
}

}  // namespace gemma
