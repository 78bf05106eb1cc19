// AArch64 NEON kernels (compiled with -march=armv8.2-a+dotprod+fp16). Same structure as the x86
// kernels (matmul_x86.inc): L2-sized row blocks, token tiles, row tiles; float weights with FMA,
// quantised weights with `sdot` (vdotq_s32: int8 x int8 -> int32, groups of 4) per 32-block,
// scaled by dw * dx in float. 32 q-registers allow 4 rows x 4 tokens in both.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::neon {
namespace {

constexpr int kB = quant::kBlock;

template <DType DT>
inline float32x4_t load4(const uint8_t* row, int64_t k) {
  if constexpr (DT == DType::F32) {
    return vld1q_f32(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (DT == DType::BF16) {  // bf16 is the top half of an f32: shift left 16
    const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row + 2 * k));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  } else {
    const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row + 2 * k));
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
  }
}

template <DType DT>
inline float load1(const uint8_t* row, int64_t k) {
  if constexpr (DT == DType::F32) {
    return reinterpret_cast<const float*>(row)[k];
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * k, 2);
    return DT == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

template <DType DT, int R, int TT>
inline void tile_float(const WeightView& W, const float* X, float* Y, int64_t ldy, int64_t r,
                       int64_t t) {
  const int64_t K = W.cols, K4 = K / 4 * 4;
  const uint8_t* row[R];
  for (int i = 0; i < R; ++i) row[i] = W.data + (r + i) * W.row_bytes;
  const float* x[TT];
  for (int j = 0; j < TT; ++j) x[j] = X + (t + j) * K;
  float32x4_t acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) acc[i][j] = vdupq_n_f32(0.f);
  for (int64_t k = 0; k < K4; k += 4) {
    float32x4_t xv[TT];
    for (int j = 0; j < TT; ++j) xv[j] = vld1q_f32(x[j] + k);
    for (int i = 0; i < R; ++i) {
      const float32x4_t w = load4<DT>(row[i], k);
      for (int j = 0; j < TT; ++j) acc[i][j] = vfmaq_f32(acc[i][j], w, xv[j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) {
      float s = vaddvq_f32(acc[i][j]);
      for (int64_t k = K4; k < K; ++k) s += load1<DT>(row[i], k) * x[j][k];
      Y[(t + j) * ldy + r + i] = s;
    }
}

// Block b as two int8x16 (elements 0..15, 16..31). Q4: nibble - 8; low nibbles hold 0..15.
template <DType DT>
inline void load_qblock(const uint8_t* qs, int64_t b, int8x16_t* w0, int8x16_t* w1) {
  if constexpr (DT == DType::Q8) {
    *w0 = vld1q_s8(reinterpret_cast<const int8_t*>(qs + b * kB));
    *w1 = vld1q_s8(reinterpret_cast<const int8_t*>(qs + b * kB + 16));
  } else {
    const uint8x16_t p = vld1q_u8(qs + b * (kB / 2));
    const int8x16_t eight = vdupq_n_s8(8);
    *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(p, vdupq_n_u8(15))), eight);
    *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(p, 4)), eight);
  }
}

inline float f16_scalar(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Canonical arithmetic (quant_canonical.h): the block's exact integer dot (sdot, then an exact
// horizontal add), then one fused multiply-add per block into the output's own accumulator.
template <DType DT, int R, int TT>
inline void tile_quant(const WeightView& W, const QuantizedActs& xq, float* Y, int64_t ldy,
                       int64_t r, int64_t t) {
  const int64_t nb = xq.nb;
  const uint8_t* row[R];
  // Rows16 rows are gathered back into the Rows layout (correct, not yet fast: a lane = row
  // sdot kernel reading the lines directly is the NEON counterpart of the x86 one).
  thread_local std::vector<uint8_t> gathered;
  if (W.layout == Layout::Rows16 && gathered.size() < size_t(R * W.row_bytes)) gathered.resize(size_t(R * W.row_bytes));
  for (int i = 0; i < R; ++i)
    row[i] = W.layout == Layout::Rows16 ? plain_row(W, r + i, gathered.data() + i * W.row_bytes)
                                        : W.data + (r + i) * W.row_bytes;
  float acc[R][TT] = {};
  for (int64_t b = 0; b < nb; ++b) {
    int8x16_t w0[R], w1[R];
    float dw[R];
    for (int i = 0; i < R; ++i) {
      load_qblock<DT>(row[i] + 2 * nb, b, &w0[i], &w1[i]);
      dw[i] = f16_scalar(row[i] + 2 * b);
    }
    for (int j = 0; j < TT; ++j) {
      const int64_t tb = (t + j) * nb + b;
      const int8x16_t x0 = vld1q_s8(xq.q + tb * kB), x1 = vld1q_s8(xq.q + tb * kB + 16);
      const float dx = xq.d[tb];
      for (int i = 0; i < R; ++i) {
        const int32x4_t d = vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0[i], x0), w1[i], x1);
        acc[i][j] = canonical_block_step(vaddvq_s32(d), dw[i], dx, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) Y[(t + j) * ldy + r + i] = acc[i][j];
}

template <int R, int TT, typename Tile>
inline void run_tiles(int64_t T, int64_t r0, int64_t r1, int64_t row_bytes, Tile tile) {
  const int64_t rb = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(1, row_bytes) / R * R);
  for (int64_t a = r0; a < r1; a += rb) {
    const int64_t e = std::min(r1, a + rb);
    int64_t t = 0;
    for (; t + TT <= T; t += TT) {
      int64_t r = a;
      for (; r + R <= e; r += R) tile.template run<R, TT>(r, t);
      for (; r < e; ++r) tile.template run<1, TT>(r, t);
    }
    for (; t < T; ++t) {
      int64_t r = a;
      for (; r + 4 <= e; r += 4) tile.template run<4, 1>(r, t);
      for (; r < e; ++r) tile.template run<1, 1>(r, t);
    }
  }
}

template <DType DT>
struct FloatTile {
  const WeightView& W; const float* X; float* Y; int64_t ldy;
  template <int R, int TT> void run(int64_t r, int64_t t) { tile_float<DT, R, TT>(W, X, Y, ldy, r, t); }
};
template <DType DT>
struct QuantTile {
  const WeightView& W; const QuantizedActs& xq; float* Y; int64_t ldy;
  template <int R, int TT> void run(int64_t r, int64_t t) { tile_quant<DT, R, TT>(W, xq, Y, ldy, r, t); }
};

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.dtype) {
    case DType::F32: run_tiles<4, 4>(T, r0, r1, W.row_bytes, FloatTile<DType::F32>{W, X, Y, ldy}); break;
    case DType::BF16: run_tiles<4, 4>(T, r0, r1, W.row_bytes, FloatTile<DType::BF16>{W, X, Y, ldy}); break;
    case DType::F16: run_tiles<4, 4>(T, r0, r1, W.row_bytes, FloatTile<DType::F16>{W, X, Y, ldy}); break;
    case DType::Q8: run_tiles<4, 4>(T, r0, r1, W.row_bytes, QuantTile<DType::Q8>{W, *xq, Y, ldy}); break;
    case DType::Q4: run_tiles<4, 4>(T, r0, r1, W.row_bytes, QuantTile<DType::Q4>{W, *xq, Y, ldy}); break;
    default: break;  // GGUF formats: matmul_kquant_neon.cpp
  }
}

}  // namespace gemma::neon
