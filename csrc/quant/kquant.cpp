#include "quant/kquant.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace gemma::quant {

int64_t gguf_row_bytes(DType t, int64_t cols) {
  const int qk = gguf_block_weights(t);
  if (cols % qk != 0)
    throw std::invalid_argument(std::string(dtype_name(t)) + " rows must hold a multiple of " +
                                std::to_string(qk) + " weights, got " + std::to_string(cols));
  return cols / qk * gguf_block_bytes(t);
}

void q5_0_levels(const uint8_t* blk, int8_t lvl[32]) {
  uint32_t qh;
  std::memcpy(&qh, blk + 2, 4);  // little-endian, as GGUF is
  const uint8_t* qs = blk + 6;
  for (int j = 0; j < 16; ++j) {
    lvl[j] = int8_t(((qs[j] & 15) | ((qh >> j) & 1) << 4) - 16);
    lvl[j + 16] = int8_t(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
  }
}

void q4_k_levels(const uint8_t* blk, int c, int8_t lvl[32]) {
  const uint8_t* q = blk + 16 + 32 * (c / 2);
  const int shift = 4 * (c & 1);
  for (int l = 0; l < 32; ++l) lvl[l] = int8_t((q[l] >> shift) & 15);
}

void q6_k_levels(const uint8_t* blk, int c, int8_t lvl[32], int sc[2]) {
  // Halves of 128 weights; within a half, chunk cc < 4 takes low (cc < 2) or high nibbles of
  // ql[32 (cc & 1) + l] and bits 2cc, 2cc+1 of qh[l].
  const int h = c / 4, cc = c % 4;
  const uint8_t* ql = blk + 64 * h + 32 * (cc & 1);
  const uint8_t* qh = blk + 128 + 32 * h;
  const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
  for (int l = 0; l < 32; ++l) {
    const int lo = (ql[l] >> (4 * (cc >> 1))) & 15;
    const int hi = (qh[l] >> (2 * cc)) & 3;
    lvl[l] = int8_t((lo | hi << 4) - 32);
  }
  sc[0] = scales[2 * c];
  sc[1] = scales[2 * c + 1];
}

void gguf_dequantize_row(DType t, const uint8_t* row, int64_t cols, float* out) {
  const int64_t nblk = cols / gguf_block_weights(t);
  const int bb = gguf_block_bytes(t);
  int8_t lvl[32];
  for (int64_t i = 0; i < nblk; ++i) {
    const uint8_t* blk = row + i * bb;
    if (t == DType::Q5_0) {
      const float d = load_f16(blk);
      q5_0_levels(blk, lvl);
      for (int l = 0; l < 32; ++l) out[i * 32 + l] = d * float(lvl[l]);
    } else if (t == DType::Q4_K) {
      const float d = load_f16(blk), dmin = load_f16(blk + 2);
      for (int c = 0; c < 8; ++c) {
        int sc, m;
        q4k_scale_min(blk + 4, c, &sc, &m);
        const float ds = d * float(sc), dm = dmin * float(m);  // both exact in float32
        q4_k_levels(blk, c, lvl);
        for (int l = 0; l < 32; ++l) out[i * kQK + 32 * c + l] = ds * float(lvl[l]) - dm;
      }
    } else {
      const float d = load_f16(blk + 208);
      for (int c = 0; c < 8; ++c) {
        int sc[2];
        q6_k_levels(blk, c, lvl, sc);
        for (int l = 0; l < 32; ++l)
          out[i * kQK + 32 * c + l] = (d * float(sc[l / 16])) * float(lvl[l]);  // gguf's order
      }
    }
  }
}

}  // namespace gemma::quant
