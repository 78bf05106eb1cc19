// GGUF block formats stored natively (byte for byte as llama.cpp writes them), so a GGUF file
// imports without rounding its weights a second time. One source of truth for the converter
// (through the bindings), the runtime's dequantisation and every kernel's block decoding.
//
// A row of `cols` weights is cols / QK blocks laid end to end, exactly as in the GGUF tensor
// (docs/quantization.md draws each block). Every block decomposes into 32-weight sub-blocks, the
// granularity of the quantised activations (QuantizedActs), as
//
//   w[j] = scale * lvl[j] - min          lvl = small integers, j < 32
//
//   Q5_0 (QK 32, 22 B):  d f16 | qh u32 (bit j = 5th bit of weight j) | qs[16] (byte j: weight j
//                        low nibble, weight j+16 high nibble)           lvl = q - 16, scale = d
//   Q4_1 (QK 32, 20 B):  d f16 | m f16 | qs[16] (as Q5_0)                   lvl = q in [0, 15], min = -m
//   Q5_1 (QK 32, 24 B):  d f16 | m f16 | qh u32 | qs[16] (as Q5_0)          lvl = q in [0, 31], min = -m
//   Q4_K (QK 256, 144 B): d f16 | dmin f16 | scales[12] (8 x 6-bit sc, 8 x 6-bit m, packed) |
//                        qs[128] (byte 32p+l: sub-block 2p weight l low nibble, 2p+1 high)
//                                                   lvl = q in [0,15], scale = d*sc, min = dmin*m
//   Q6_K (QK 256, 210 B): ql[128] | qh[64] | scales[16] int8 (one per 16 weights) | d f16
//                        lvl = q - 32 in [-32, 31], scale = d * sc (sc changes every 16 weights)
//   Q5_K (QK 256, 176 B): d f16 | dmin f16 | scales[12] (as Q4_K) | qh[32] (bit c of byte l: 5th
//                        bit of sub-block c weight l) | qs[128] (as Q4_K)
//                                                   lvl = q in [0,31], scale = d*sc, min = dmin*m
#pragma once
#include <cstdint>

#include "kernels/dtype.h"

namespace gemma::quant {

constexpr int kQK = 256;  // weights per K-quant super-block
constexpr int kQ5_0Bytes = 22, kQ4_1Bytes = 20, kQ5_1Bytes = 24, kQ4_KBytes = 144, kQ5_KBytes = 176,
              kQ6_KBytes = 210;

inline bool is_native_gguf(DType t) {
  return t == DType::Q5_0 || t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K ||
         t == DType::Q6_K;
}
// The 32-weight formats (one block per activation block).
inline constexpr bool is_gguf_32(DType t) { return t == DType::Q5_0 || t == DType::Q4_1 || t == DType::Q5_1; }

// Weights per block and bytes per block of a native GGUF format.
inline constexpr int gguf_block_weights(DType t) { return is_gguf_32(t) ? 32 : kQK; }
inline constexpr int gguf_block_bytes(DType t) {
  return t == DType::Q5_0   ? kQ5_0Bytes
         : t == DType::Q4_1 ? kQ4_1Bytes
         : t == DType::Q5_1 ? kQ5_1Bytes
         : t == DType::Q4_K ? kQ4_KBytes
         : t == DType::Q5_K ? kQ5_KBytes
                            : kQ6_KBytes;
}

// Bytes of one row; throws std::invalid_argument when cols is not a multiple of the block size
// (GGUF requires it; the message names the format and the block size).
int64_t gguf_row_bytes(DType t, int64_t cols);

inline uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// Q4_K: the 6-bit scale and min of sub-block j < 8 from the 12 packed bytes (llama.cpp's
// get_scale_min_k4): j < 4 in the low 6 bits of bytes j / j+4; j >= 4 split between the low /
// high nibble of byte j+4 and the top 2 bits of bytes j-4 / j.
inline void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Sub-block c (32 weights) of a block as integer levels: the scalar definition every kernel
// matches. Q5_0: c = 0, lvl in [-16, 15]. Q4_K: c < 8, lvl in [0, 15]. Q6_K: c < 8, lvl in
// [-32, 31], and sc[0] / sc[1] the int8 scales of weights 0..15 / 16..31.
void q5_0_levels(const uint8_t* blk, int8_t lvl[32]);
// Q4_1 / Q5_1: unsigned levels in [0, 15] / [0, 31]; w = d * lvl + m.
void q4_1_levels(const uint8_t* blk, int8_t lvl[32]);
void q5_1_levels(const uint8_t* blk, int8_t lvl[32]);
void q4_k_levels(const uint8_t* blk, int c, int8_t lvl[32]);
void q5_k_levels(const uint8_t* blk, int c, int8_t lvl[32]);  // lvl in [0, 31]
void q6_k_levels(const uint8_t* blk, int c, int8_t lvl[32], int sc[2]);

// Quantisers (converter side), `cols` a multiple of the block size; `imp` (may be null): per
// column importance weights (e.g. mean x^2 of the activations), the error each minimises being
// sum_j imp_j (x_j - w_j)^2. docs/quantization.md describes the searches.
//   q4_k: per 32 weights a scale and a minimum, fitted by least squares over a grid of
//         candidate roundings; the 8 scales / 8 minimums quantised to 6 bits against an f16
//         super-scale, and the levels re-rounded against the stored values.
//   q5_0: the 32-block scale search of quantize_block (quant.h) on [-16, 15].
void quantize_row_q4_k(const float* x, int64_t cols, const float* imp, uint8_t* out);
void quantize_row_q5_0(const float* x, int64_t cols, uint8_t* out);

// One row back to float32, bit for bit as gguf.quants.dequantize (and ggml) computes it:
// Q5_0 d * lvl; Q4_1, Q5_1 d * lvl + m; Q4_K, Q5_K (d * sc) * q - dmin * m; Q6_K (d * sc) * lvl.
void gguf_dequantize_row(DType t, const uint8_t* row, int64_t cols, float* out);

}  // namespace gemma::quant
