// AArch64 NEON kernels for the native GGUF formats (compiled with -march=armv8.2-a+dotprod+fp16):
// levels decoded to signed int8, `sdot` (vdotq_s32) per 16 bytes, 4 int32 lanes per sub-block,
// scaled in float as matmul_kquant.h defines. Per output element: a 4-lane float accumulator
// updated block by block in order, then vaddvq; tile<R, TT> does exactly that for each of its
// elements whatever R and TT, so decode and prefill agree bit for bit.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/matmul_kquant.h"
#include "quant/kquant.h"

namespace gemma::neon {
namespace {

inline float kf16(const uint8_t* p) { return f16_to_f32(quant::load_u16(p)); }

inline int32x4_t dot32(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
  return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
}

// Q5_0 / Q4_1 / Q5_1: weights 0..15 / 16..31 as levels (Q5_0 signed in [-16, 15]; Q4_1, Q5_1
// unsigned in [0, 15] / [0, 31]).
template <DType DT>
inline void q32_levels(const uint8_t* blk, int8x16_t* w0, int8x16_t* w1) {
  constexpr int qs_at = DT == DType::Q5_0 ? 6 : DT == DType::Q4_1 ? 4 : 8;
  const uint8x16_t qs = vld1q_u8(blk + qs_at);
  if constexpr (DT == DType::Q4_1) {
    *w0 = vreinterpretq_s8_u8(vandq_u8(qs, vdupq_n_u8(15)));
    *w1 = vreinterpretq_s8_u8(vshrq_n_u8(qs, 4));
    return;
  }
  uint32_t qh;
  std::memcpy(&qh, blk + (DT == DType::Q5_0 ? 2 : 4), 4);
  static const uint8_t kBits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bits = vld1q_u8(kBits);
  const uint8x16_t b0 = vcombine_u8(vdup_n_u8(uint8_t(qh)), vdup_n_u8(uint8_t(qh >> 8)));
  const uint8x16_t b1 = vcombine_u8(vdup_n_u8(uint8_t(qh >> 16)), vdup_n_u8(uint8_t(qh >> 24)));
  const uint8x16_t h0 = vandq_u8(vtstq_u8(b0, bits), vdupq_n_u8(16));
  const uint8x16_t h1 = vandq_u8(vtstq_u8(b1, bits), vdupq_n_u8(16));
  const int8x16_t off = vdupq_n_s8(DT == DType::Q5_0 ? 16 : 0);
  *w0 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(qs, vdupq_n_u8(15)), h0)), off);
  *w1 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(qs, 4), h1)), off);
}

// Q4_K sub-block c: levels in [0, 15].
inline void q4_k_levels(const uint8_t* blk, int c, int8x16_t* w0, int8x16_t* w1) {
  const uint8_t* q = blk + 16 + 32 * (c / 2);
  const uint8x16_t v0 = vld1q_u8(q), v1 = vld1q_u8(q + 16);
  if (c & 1) {
    *w0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4));
    *w1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
  } else {
    *w0 = vreinterpretq_s8_u8(vandq_u8(v0, vdupq_n_u8(15)));
    *w1 = vreinterpretq_s8_u8(vandq_u8(v1, vdupq_n_u8(15)));
  }
}

// Q5_K sub-block c: levels in [0, 31] (Q4_K's nibbles at byte 48, bit c of qh[l] as bit 4).
inline void q5_k_levels(const uint8_t* blk, int c, int8x16_t* w0, int8x16_t* w1) {
  const uint8_t* q = blk + 48 + 32 * (c / 2);
  const int8x16_t sh = vdupq_n_s8(int8_t(-c));
  for (int half = 0; half < 2; ++half) {
    const uint8x16_t v = vld1q_u8(q + 16 * half), h = vld1q_u8(blk + 16 + 16 * half);
    const uint8x16_t lo = (c & 1) ? vshrq_n_u8(v, 4) : vandq_u8(v, vdupq_n_u8(15));
    const uint8x16_t hi = vshlq_n_u8(vandq_u8(vshlq_u8(h, sh), vdupq_n_u8(1)), 4);
    const int8x16_t w = vreinterpretq_s8_u8(vorrq_u8(lo, hi));
    if (half == 0) *w0 = w; else *w1 = w;
  }
}

// Q6_K chunk c: signed levels in [-32, 31].
inline void q6_k_levels(const uint8_t* blk, int c, int8x16_t* w0, int8x16_t* w1) {
  const int h = c / 4, cc = c % 4;
  const uint8_t* ql = blk + 64 * h + 32 * (cc & 1);
  const uint8_t* qh = blk + 128 + 32 * h;
  const int8x16_t sh = vdupq_n_s8(int8_t(-2 * cc));  // vshlq by a negative count shifts right
  const int8x16_t thirty_two = vdupq_n_s8(32);
  for (int half = 0; half < 2; ++half) {
    const uint8x16_t l = vld1q_u8(ql + 16 * half), hb = vld1q_u8(qh + 16 * half);
    const uint8x16_t lo = cc >> 1 ? vshrq_n_u8(l, 4) : vandq_u8(l, vdupq_n_u8(15));
    const uint8x16_t hi = vshlq_n_u8(vandq_u8(vshlq_u8(hb, sh), vdupq_n_u8(3)), 4);
    const int8x16_t w = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), thirty_two);
    if (half == 0) *w0 = w; else *w1 = w;
  }
}

template <DType DT, int R, int TT>
inline void tile(const WeightView& W, const QuantizedActs& xq, float* Y, int64_t ldy, int64_t r, int64_t t) {
  const int64_t nb = xq.nb;
  const uint8_t* row[R];
  for (int i = 0; i < R; ++i) row[i] = W.data + (r + i) * W.row_bytes;
  float32x4_t acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) acc[i][j] = vdupq_n_f32(0.f);
  if constexpr (quant::is_gguf_32(DT)) {
    for (int64_t b = 0; b < nb; ++b) {
      int8x16_t w0[R], w1[R];
      float d[R], m[R];
      for (int i = 0; i < R; ++i) {
        const uint8_t* blk = row[i] + b * quant::gguf_block_bytes(DT);
        d[i] = kf16(blk);
        m[i] = DT == DType::Q5_0 ? 0.f : kf16(blk + 2);
        q32_levels<DT>(blk, &w0[i], &w1[i]);
      }
      for (int j = 0; j < TT; ++j) {
        const int64_t tb = (t + j) * nb + b;
        const int8x16_t x0 = vld1q_s8(xq.q + tb * 32), x1 = vld1q_s8(xq.q + tb * 32 + 16);
        const float dx = xq.d[tb];
        const float32x4_t dxs = vsetq_lane_f32(dx * float(xq.s[tb]), vdupq_n_f32(0.f), 0);  // lane 0
        for (int i = 0; i < R; ++i) {
          acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(dot32(w0[i], w1[i], x0, x1)), d[i] * dx);
          if constexpr (DT != DType::Q5_0) acc[i][j] = vfmaq_n_f32(acc[i][j], dxs, m[i]);  // + m (dx s)
        }
      }
    }
  } else {
    for (int64_t s = 0; s < nb / 8; ++s) {
      const uint8_t* blk[R];
      float scale[R][8];            // Q4_K: d * sc per sub-block; Q6_K: d
      int sc6[R][16];               // Q6_K: the int8 scales
      float32x4_t mlo[R], mhi[R];   // Q4_K: dmin * m
      for (int i = 0; i < R; ++i) {
        if constexpr (DT == DType::Q4_K || DT == DType::Q5_K) {
          blk[i] = row[i] + s * quant::gguf_block_bytes(DT);
          const float d = kf16(blk[i]), dmin = kf16(blk[i] + 2);
          float mf[8];
          for (int c = 0; c < 8; ++c) {
            int sc, m;
            quant::q4k_scale_min(blk[i] + 4, c, &sc, &m);
            scale[i][c] = d * float(sc);
            mf[c] = dmin * float(m);
          }
          mlo[i] = vld1q_f32(mf);
          mhi[i] = vld1q_f32(mf + 4);
        } else {
          blk[i] = row[i] + s * quant::kQ6_KBytes;
          const float d = kf16(blk[i] + 208);
          for (int c = 0; c < 8; ++c) scale[i][c] = d;
          for (int k = 0; k < 16; ++k) sc6[i][k] = reinterpret_cast<const int8_t*>(blk[i] + 192)[k];
        }
      }
      for (int c = 0; c < 8; ++c) {
        int8x16_t w0[R], w1[R];
        for (int i = 0; i < R; ++i) {
          if constexpr (DT == DType::Q4_K) q4_k_levels(blk[i], c, &w0[i], &w1[i]);
          else if constexpr (DT == DType::Q5_K) q5_k_levels(blk[i], c, &w0[i], &w1[i]);
          else q6_k_levels(blk[i], c, &w0[i], &w1[i]);
        }
        for (int j = 0; j < TT; ++j) {
          const int64_t tb = (t + j) * nb + 8 * s + c;
          const int8x16_t x0 = vld1q_s8(xq.q + tb * 32), x1 = vld1q_s8(xq.q + tb * 32 + 16);
          const float dx = xq.d[tb];
          for (int i = 0; i < R; ++i) {
            int32x4_t lanes;
            if constexpr (DT != DType::Q6_K) {
              lanes = dot32(w0[i], w1[i], x0, x1);
            } else {
              lanes = vmlaq_n_s32(vmulq_n_s32(vdotq_s32(vdupq_n_s32(0), w0[i], x0), sc6[i][2 * c]),
                                  vdotq_s32(vdupq_n_s32(0), w1[i], x1), sc6[i][2 * c + 1]);
            }
            acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(lanes), scale[i][c] * dx);
          }
        }
      }
      if constexpr (DT != DType::Q6_K) {
        for (int j = 0; j < TT; ++j) {
          const int64_t tb0 = (t + j) * nb + 8 * s;
          const float32x4_t dlo = vmulq_f32(vld1q_f32(xq.d + tb0), vcvtq_f32_s32(vld1q_s32(xq.s + tb0)));
          const float32x4_t dhi = vmulq_f32(vld1q_f32(xq.d + tb0 + 4), vcvtq_f32_s32(vld1q_s32(xq.s + tb0 + 4)));
          for (int i = 0; i < R; ++i) acc[i][j] = vfmsq_f32(vfmsq_f32(acc[i][j], mlo[i], dlo), mhi[i], dhi);
        }
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < TT; ++j) Y[(t + j) * ldy + r + i] = vaddvq_f32(acc[i][j]);
}

template <DType DT>
void run(const WeightView& W, const QuantizedActs& xq, int64_t T, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int R = 4, TT = 4;
  const int64_t rb = std::max<int64_t>(R, (int64_t(128) << 10) / std::max<int64_t>(1, W.row_bytes) / R * R);
  for (int64_t a = r0; a < r1; a += rb) {
    const int64_t e = std::min(r1, a + rb);
    int64_t t = 0;
    for (; t + TT <= T; t += TT) {
      int64_t r = a;
      for (; r + R <= e; r += R) tile<DT, R, TT>(W, xq, Y, ldy, r, t);
      for (; r < e; ++r) tile<DT, 1, TT>(W, xq, Y, ldy, r, t);
    }
    for (; t < T; ++t) {
      int64_t r = a;
      for (; r + R <= e; r += R) tile<DT, R, 1>(W, xq, Y, ldy, r, t);
      for (; r < e; ++r) tile<DT, 1, 1>(W, xq, Y, ldy, r, t);
    }
  }
}

}  // namespace

void matmul_rows_kquant(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                        int64_t ldy, int64_t r0, int64_t r1) {
  switch (W.dtype) {
    case DType::Q5_0: run<DType::Q5_0>(W, *xq, T, Y, ldy, r0, r1); break;
    case DType::Q4_1: run<DType::Q4_1>(W, *xq, T, Y, ldy, r0, r1); break;
    case DType::Q5_1: run<DType::Q5_1>(W, *xq, T, Y, ldy, r0, r1); break;
    case DType::Q4_K: run<DType::Q4_K>(W, *xq, T, Y, ldy, r0, r1); break;
    case DType::Q6_K: run<DType::Q6_K>(W, *xq, T, Y, ldy, r0, r1); break;
    case DType::Q5_K: run<DType::Q5_K>(W, *xq, T, Y, ldy, r0, r1); break;
    default: throw std::invalid_argument("kquant kernel called for a non-GGUF dtype");
  }
}

}  // namespace gemma::neon
