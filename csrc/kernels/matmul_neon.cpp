// AArch64 NEON kernels (compiled with -march=armv8.2-a+dotprod+fp16). Same structure as the x86
// kernels (matmul_x86.inc): L2-sized row blocks, token tiles, row tiles; float weights with FMA,
// quantised weights with `sdot` (vdotq_s32: int8 x int8 -> int32, groups of 4) per 32-block,
// scaled by dw * dx in float. 32 q-registers allow 4 rows x 4 tokens in both. int8/int4 in the
// Rows16 layout: lane = row with vdotq_laneq_s32 (quant_rows16 below).
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
  for (int i = 0; i < R; ++i) row[i] = W.data + (r + i) * W.row_bytes;
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

// ---- Layout::Rows16 (quant.h): lane = row, 4 rows per int32x4 ----
// In a group's block, 16 bytes at 64 c + 16 q of the lines are piece c of rows 4q .. 4q+3, so
// vdotq_laneq_s32 with x's 4-level group c as the lane advances 4 rows' exact integer dots at
// once (no horizontal add), then one vfmaq per block: the canonical arithmetic.

// idot += w . x's levels 4c .. 4c+3 (lane c of x0 for c < 4, of x1 for c >= 4), per row of w.
template <int C>
inline int32x4_t dot_piece(int32x4_t idot, int8x16_t w, int8x16_t x0, int8x16_t x1) {
  return C < 4 ? vdotq_laneq_s32(idot, w, x0, C % 4) : vdotq_laneq_s32(idot, w, x1, C % 4);
}

// Quads q0 .. q0+NQ-1 of one group against tokens t .. t+TT-1.
template <DType DT, int NQ, int TT>
inline void group16_tile(const uint8_t* group, int q0, const QuantizedActs& xq, int64_t t, float* Y,
                         int64_t ldy, int64_t r, int64_t r1) {
  constexpr int64_t kStride = quant::group_block_bytes(DT);
  const int64_t nb = xq.nb;
  float32x4_t acc[NQ][TT];
  for (int i = 0; i < NQ; ++i)
    for (int j = 0; j < TT; ++j) acc[i][j] = vdupq_n_f32(0.f);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = group + b * kStride;
    const uint8_t* lines = blk + 2 * quant::kGroupRows;
    int8x16_t x0[TT], x1[TT];
    float dx[TT];
    for (int j = 0; j < TT; ++j) {
      const int64_t tb = (t + j) * nb + b;
      x0[j] = vld1q_s8(xq.q + tb * kB);
      x1[j] = vld1q_s8(xq.q + tb * kB + 16);
      dx[j] = xq.d[tb];
    }
    for (int i = 0; i < NQ; ++i) {
      const int q = q0 + i;
      const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(blk) + 4 * q)));
      int32x4_t id[TT];
      for (int j = 0; j < TT; ++j) id[j] = vdupq_n_s32(0);
      if constexpr (DT == DType::Q8) {
        int8x16_t w[8];
        for (int c = 0; c < 8; ++c) w[c] = vld1q_s8(reinterpret_cast<const int8_t*>(lines + 64 * c + 16 * q));
        for (int j = 0; j < TT; ++j) {
          id[j] = dot_piece<0>(id[j], w[0], x0[j], x1[j]);
          id[j] = dot_piece<1>(id[j], w[1], x0[j], x1[j]);
          id[j] = dot_piece<2>(id[j], w[2], x0[j], x1[j]);
          id[j] = dot_piece<3>(id[j], w[3], x0[j], x1[j]);
          id[j] = dot_piece<4>(id[j], w[4], x0[j], x1[j]);
          id[j] = dot_piece<5>(id[j], w[5], x0[j], x1[j]);
          id[j] = dot_piece<6>(id[j], w[6], x0[j], x1[j]);
          id[j] = dot_piece<7>(id[j], w[7], x0[j], x1[j]);
        }
      } else {  // packed byte k holds levels k (low nibble) and k + 16 (high), as nibble - 8
        int8x16_t lo[4], hi[4];
        const int8x16_t eight = vdupq_n_s8(8);
        for (int p = 0; p < 4; ++p) {
          const uint8x16_t P = vld1q_u8(lines + 64 * p + 16 * q);
          lo[p] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(P, vdupq_n_u8(15))), eight);
          hi[p] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(P, 4)), eight);
        }
        for (int j = 0; j < TT; ++j) {  // levels 4p.. in x0 lane p; 16 + 4p.. in x1 lane p
          id[j] = dot_piece<0>(id[j], lo[0], x0[j], x1[j]);
          id[j] = dot_piece<1>(id[j], lo[1], x0[j], x1[j]);
          id[j] = dot_piece<2>(id[j], lo[2], x0[j], x1[j]);
          id[j] = dot_piece<3>(id[j], lo[3], x0[j], x1[j]);
          id[j] = dot_piece<4>(id[j], hi[0], x0[j], x1[j]);
          id[j] = dot_piece<5>(id[j], hi[1], x0[j], x1[j]);
          id[j] = dot_piece<6>(id[j], hi[2], x0[j], x1[j]);
          id[j] = dot_piece<7>(id[j], hi[3], x0[j], x1[j]);
        }
      }
      for (int j = 0; j < TT; ++j) acc[i][j] = vfmaq_f32(acc[i][j], vcvtq_f32_s32(id[j]), vmulq_n_f32(dw, dx[j]));
    }
  }
  for (int i = 0; i < NQ; ++i)
    for (int j = 0; j < TT; ++j) {
      float out[4];
      vst1q_f32(out, acc[i][j]);
      const int64_t rq = r + 4 * (q0 + i);
      for (int k = 0; k < 4 && rq + k < r1; ++k) Y[(t + j) * ldy + rq + k] = out[k];
    }
}

template <DType DT>
void quant_rows16(const WeightView& W, const QuantizedActs& xq, int64_t T, float* Y, int64_t ldy, int64_t r0,
                  int64_t r1) {
  const int64_t gbytes = xq.nb * quant::group_block_bytes(DT);
  const uint8_t* first = W.data + r0 / quant::kGroupRows * gbytes;
  const int64_t n_groups = (r1 - r0 + quant::kGroupRows - 1) / quant::kGroupRows;
  const auto row = [&](int64_t g) { return r0 + g * quant::kGroupRows; };
  if (T == 1) {  // decode: the 4 quads of a group together, one ascending stream
    for (int64_t g = 0; g < n_groups; ++g) group16_tile<DT, 4, 1>(first + g * gbytes, 0, xq, 0, Y, ldy, row(g), r1);
    return;
  }
  // Prefill: passes of groups that fit ~128 KiB of L2, every token tile over a pass.
  const int64_t per_pass = std::max<int64_t>(1, (int64_t(128) << 10) / gbytes);
  for (int64_t g0 = 0; g0 < n_groups; g0 += per_pass) {
    const int64_t g1 = std::min(n_groups, g0 + per_pass);
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
      for (int64_t g = g0; g < g1; ++g)
        for (int q = 0; q < 4 && row(g) + 4 * q < r1; ++q)
          group16_tile<DT, 1, 4>(first + g * gbytes, q, xq, t, Y, ldy, row(g), r1);
    for (; t < T; ++t)
      for (int64_t g = g0; g < g1; ++g)
        for (int q = 0; q < 4 && row(g) + 4 * q < r1; ++q)
          group16_tile<DT, 1, 1>(first + g * gbytes, q, xq, t, Y, ldy, row(g), r1);
  }
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
    case DType::Q8:
      if (W.layout == Layout::Rows16) {
        quant_rows16<DType::Q8>(W, *xq, T, Y, ldy, r0, r1);
      } else {
        run_tiles<4, 4>(T, r0, r1, W.row_bytes, QuantTile<DType::Q8>{W, *xq, Y, ldy});
      }
      break;
    case DType::Q4:
      if (W.layout == Layout::Rows16) {
        quant_rows16<DType::Q4>(W, *xq, T, Y, ldy, r0, r1);
      } else {
        run_tiles<4, 4>(T, r0, r1, W.row_bytes, QuantTile<DType::Q4>{W, *xq, Y, ldy});
      }
      break;
    default: break;  // GGUF formats: matmul_kquant_neon.cpp
  }
}

// quantize_activations (matmul.cpp, the reference) with 4 lanes: the same operations in the same
// precision, so the same bits (max is exact; vrndnq rounds to nearest even, as the reference's
// magic-number rounding does below 2^22; the sign is restored exactly). Partial blocks go to the
// reference.
void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s) {
  const int64_t nb = quant::n_blocks(cols), full = cols / kB;
  for (int64_t t = 0; t < T; ++t) {
    const float* x = X + t * cols;
    for (int64_t b = 0; b < full; ++b) {
      const float* xb = x + b * kB;
      float32x4_t v[8], a[8];
      for (int i = 0; i < 8; ++i) v[i] = vld1q_f32(xb + 4 * i), a[i] = vabsq_f32(v[i]);
      float32x4_t m = a[0];
      for (int i = 1; i < 8; ++i) m = vmaxq_f32(m, a[i]);
      const float amax = vmaxvq_f32(m);
      const float32x4_t id = vdupq_n_f32(amax > 0.f ? 127.f / amax : 0.f);
      int32x4_t qi[8], sum = vdupq_n_s32(0);
      for (int i = 0; i < 8; ++i) {
        const int32x4_t mag = vcvtq_s32_f32(vminq_f32(vdupq_n_f32(127.f), vrndnq_f32(vmulq_f32(a[i], id))));
        const uint32x4_t neg = vcltq_f32(v[i], vdupq_n_f32(0.f));
        qi[i] = vbslq_s32(neg, vnegq_s32(mag), mag);
        sum = vaddq_s32(sum, qi[i]);
      }
      int8_t* qb = q + (t * nb + b) * kB;
      for (int h = 0; h < 2; ++h) {  // int32 -> int8, no saturation: |q| <= 127
        const int16x8_t lo = vcombine_s16(vmovn_s32(qi[4 * h]), vmovn_s32(qi[4 * h + 1]));
        const int16x8_t hi = vcombine_s16(vmovn_s32(qi[4 * h + 2]), vmovn_s32(qi[4 * h + 3]));
        vst1q_s8(qb + 16 * h, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
      }
      d[t * nb + b] = amax / 127.f;
      s[t * nb + b] = vaddvq_s32(sum);
    }
    if (full < nb)  // the partial last block
      gemma::quantize_activations(x + full * kB, 1, cols - full * kB, q + (t * nb + full) * kB, d + t * nb + full,
                                  s + t * nb + full);
  }
}

}  // namespace gemma::neon
