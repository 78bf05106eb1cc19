#include "quant/kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/quant.h"
#include <stdexcept>
#include <string>

namespace gemma::quant {

int64_t gguf_row_bytes(DType t, int64_t cols) {
  const int qk = gguf_block_weights(t);
  if (cols % qk != 0)
    throw std::invalid_argument(std::string(dtype_name(t)) + " rows must hold a multiple of " +
                                std::to_string(qk) + " weights, got " + std::to_string(cols));
  return size_mul(cols / qk, gguf_block_bytes(t), "row_bytes");
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

// Nibbles of qs[16] (weight j low, j + 16 high) plus, when qh is given, bit j of qh as bit 4.
static void nibble_levels(const uint8_t* qs, const uint8_t* qh_bytes, int8_t lvl[32]) {
  uint32_t qh = 0;
  if (qh_bytes) std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    lvl[j] = int8_t((qs[j] & 15) | ((qh >> j) & 1) << 4);
    lvl[j + 16] = int8_t((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
  }
}

void q4_1_levels(const uint8_t* blk, int8_t lvl[32]) { nibble_levels(blk + 4, nullptr, lvl); }
void q5_1_levels(const uint8_t* blk, int8_t lvl[32]) { nibble_levels(blk + 8, blk + 4, lvl); }

void q4_k_levels(const uint8_t* blk, int c, int8_t lvl[32]) {
  const uint8_t* q = blk + 16 + 32 * (c / 2);
  const int shift = 4 * (c & 1);
  for (int l = 0; l < 32; ++l) lvl[l] = int8_t((q[l] >> shift) & 15);
}

void q5_k_levels(const uint8_t* blk, int c, int8_t lvl[32]) {
  const uint8_t* qh = blk + 16;
  const uint8_t* q = blk + 48 + 32 * (c / 2);
  const int shift = 4 * (c & 1);
  for (int l = 0; l < 32; ++l) lvl[l] = int8_t(((q[l] >> shift) & 15) | ((qh[l] >> c) & 1) << 4);
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
    } else if (t == DType::Q4_1 || t == DType::Q5_1) {
      const float d = load_f16(blk), m = load_f16(blk + 2);
      if (t == DType::Q4_1) q4_1_levels(blk, lvl); else q5_1_levels(blk, lvl);
      for (int l = 0; l < 32; ++l) {
        const float dq = d * float(lvl[l]);  // exact; then one rounding, as gguf's (d * q) + m
        out[i * 32 + l] = dq + m;
      }
    } else if (t == DType::Q4_K || t == DType::Q5_K) {
      const float d = load_f16(blk), dmin = load_f16(blk + 2);
      for (int c = 0; c < 8; ++c) {
        int sc, m;
        q4k_scale_min(blk + 4, c, &sc, &m);
        const float ds = d * float(sc), dm = dmin * float(m);  // both exact in float32
        if (t == DType::Q4_K) q4_k_levels(blk, c, lvl); else q5_k_levels(blk, c, lvl);
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

// ----------------------------------------------------------------------------- quantisers

namespace gemma::quant {

namespace {

inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }  // |v| < 2^22
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Weighted least-squares fit of x ~= a q - b (a >= 0, b >= 0) for fixed levels q: the 2x2 normal
// equations; when the unconstrained b would be negative, b = 0 and a alone. Returns the error.
float fit_scale_min(const float* x, const float* w, const uint8_t* q, int n, float* a, float* b) {
  double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
  for (int j = 0; j < n; ++j) {
    sw += w[j];
    sq += w[j] * q[j];
    sqq += double(w[j]) * q[j] * q[j];
    sx += w[j] * x[j];
    sqx += double(w[j]) * q[j] * x[j];
  }
  const double det = sw * sqq - sq * sq;
  double A = 0, B = 0;  // x ~= A q + B, B = -b
  if (det > 0) {
    A = (sw * sqx - sq * sx) / det;
    B = (sqq * sx - sq * sqx) / det;
  }
  if (B > 0 || A <= 0) {  // the minimum must be <= 0 (b >= 0): fit the scale alone
    B = 0;
    A = sqq > 0 ? sqx / sqq : 0;
    if (A < 0) A = 0;
  }
  *a = float(A);
  *b = float(-B);
  float err = 0;
  for (int j = 0; j < n; ++j) {
    const float e = float(A) * q[j] + float(B) - x[j];
    err += w[j] * e * e;
  }
  return err;
}

// One 32-weight sub-block: the (scale, min) with x ~= scale q - min, q in [0, 15], minimising the
// weighted error. Candidate level assignments come from a grid of inverse scales around the
// min/max one (each rounds (x - lo) * iscale); each is refitted by least squares and the best kept.
void best_scale_min(const float* x, const float* w, float* scale, float* min) {
  for (int j = 0; j < 32; ++j)
    if (!std::isfinite(x[j])) {  // as quantize_block does: a non-finite block stores zeros
      *scale = *min = 0.f;
      return;
    }
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  lo = std::min(lo, 0.f);  // representable range starts at -min <= 0
  if (!(hi > lo)) {        // constant block (all equal and <= 0): scale 0, min = -x
    *scale = 0.f;
    *min = -lo;
    return;
  }
  uint8_t q[32];
  float best = INFINITY, best_a = (hi - lo) / 15.f, best_b = -lo;
  for (int is = -10; is <= 10; ++is) {
    const float iscale = (15.f + 0.1f * float(is)) / (hi - lo);
    for (int j = 0; j < 32; ++j) q[j] = uint8_t(clampi(int(round_even((x[j] - lo) * iscale)), 0, 15));
    float a, b;
    const float err = fit_scale_min(x, w, q, 32, &a, &b);
    if (err < best) best = err, best_a = a, best_b = b;
  }
  // Alternate: re-round against the fitted (scale, min), refit, while the error drops.
  for (int it = 0; it < 4 && best_a > 0.f; ++it) {
    for (int j = 0; j < 32; ++j) q[j] = uint8_t(clampi(int(round_even((x[j] + best_b) / best_a)), 0, 15));
    float a, b;
    const float err = fit_scale_min(x, w, q, 32, &a, &b);
    if (!(err < best)) break;
    best = err, best_a = a, best_b = b;
  }
  *scale = best_a;
  *min = best_b;
}

// Quantise v[8] >= 0 to 6-bit integers against one f16 super-scale: returns the stored f16 value.
uint16_t quantize_6bit(const float* v, int out[8]) {
  float vmax = 0.f;
  for (int j = 0; j < 8; ++j) vmax = std::max(vmax, v[j]);
  const uint16_t h = f32_to_f16(vmax / 63.f);
  const float d = f16_to_f32(h);
  for (int j = 0; j < 8; ++j) out[j] = d > 0.f ? clampi(int(round_even(v[j] / d)), 0, 63) : 0;
  return h;
}

}  // namespace

void quantize_row_q4_k(const float* x, int64_t cols, const float* imp, uint8_t* out) {
  float ones[kQK];
  for (float& o : ones) o = 1.f;
  for (int64_t i = 0; i < cols / kQK; ++i) {
    const float* xb = x + i * kQK;
    const float* wb = imp ? imp + i * kQK : ones;
    float a[8], b[8];
    for (int c = 0; c < 8; ++c) best_scale_min(xb + 32 * c, wb + 32 * c, &a[c], &b[c]);
    int sc[8], m[8];
    const uint16_t dh = quantize_6bit(a, sc), mh = quantize_6bit(b, m);
    uint8_t* blk = out + i * kQ4_KBytes;
    std::memcpy(blk, &dh, 2);
    std::memcpy(blk + 2, &mh, 2);
    // Levels against the stored scales, q = round((x + dmin m) / (d sc)); and since rounding the
    // scales to 6 bits moved them, try the neighbouring 6-bit sc / m of each sub-block and keep
    // the pair with the smallest error (the packed bits are written after).
    const float d = f16_to_f32(dh), dmin = f16_to_f32(mh);
    uint8_t lv[8][32];
    for (int c = 0; c < 8; ++c) {
      const float* xc = xb + 32 * c;
      const float* wc = wb + 32 * c;
      float best = INFINITY;
      const int sc0 = sc[c], m0 = m[c];
      std::memset(lv[c], 0, 32);  // kept if every candidate's error is NaN (non-finite weights)
      for (int ds_i = -1; ds_i <= 1; ++ds_i)
        for (int dm_i = -1; dm_i <= 1; ++dm_i) {
          const int s1 = sc0 + ds_i, m1 = m0 + dm_i;
          if (s1 < 0 || s1 > 63 || m1 < 0 || m1 > 63) continue;
          const float ds = d * float(s1), dm = dmin * float(m1);
          float err = 0;
          uint8_t q[32];
          for (int l = 0; l < 32; ++l) {
            const float v = ds > 0.f ? (xc[l] + dm) / ds : 0.f;
            q[l] = uint8_t(v > 0.f ? clampi(int(round_even(std::min(v, 15.f))), 0, 15) : 0);  // NaN -> 0
            const float e = ds * float(q[l]) - dm - xc[l];
            err += wc[l] * e * e;
          }
          if (err < best) {
            best = err;
            sc[c] = s1;
            m[c] = m1;
            std::memcpy(lv[c], q, 32);
          }
        }
    }
    uint8_t* s = blk + 4;  // the packing q4k_scale_min reads
    for (int j = 0; j < 4; ++j) {
      s[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
      s[j + 4] = uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
      s[j + 8] = uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    uint8_t* qs = blk + 16;
    for (int p = 0; p < 4; ++p)
      for (int l = 0; l < 32; ++l) qs[32 * p + l] = uint8_t(lv[2 * p][l] | lv[2 * p + 1][l] << 4);
  }
}

void quantize_row_q5_0(const float* x, int64_t cols, uint8_t* out) {
  int8_t q[32];
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float d = quantize_block(x + 32 * b, 32, -16, 15, q);
    uint8_t* blk = out + b * kQ5_0Bytes;
    const uint16_t h = f32_to_f16(d);
    std::memcpy(blk, &h, 2);
    uint32_t qh = 0;
    for (int j = 0; j < 32; ++j) qh |= uint32_t((q[j] + 16) >> 4) << j;
    std::memcpy(blk + 2, &qh, 4);
    for (int j = 0; j < 16; ++j) blk[6 + j] = uint8_t(((q[j] + 16) & 15) | ((q[j + 16] + 16) & 15) << 4);
  }
}

}  // namespace gemma::quant
