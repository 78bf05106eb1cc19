#include "quant/quant.h"

#include "backend/cpu/thread_pool.h"
#include "quant/kquant.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gemma::quant {

int64_t row_bytes(DType dtype, int64_t cols) {
  if (cols < 0) throw std::invalid_argument("row_bytes: negative column count " + std::to_string(cols));
  switch (dtype) {
    case DType::F32: return size_mul(cols, 4, "row_bytes");
    case DType::BF16:
    case DType::F16: return size_mul(cols, 2, "row_bytes");
    case DType::Q8:
    case DType::Q4: return size_mul(n_blocks(cols), 2 + block_quant_bytes(dtype), "row_bytes");
    case DType::Q5_0:
    case DType::Q4_K:
    case DType::Q6_K:
    case DType::Q5_K:
    case DType::Q4_1:
    case DType::Q5_1: return gguf_row_bytes(dtype, cols);
  }
  throw std::invalid_argument(std::string("row_bytes: unsupported dtype ") + dtype_name(dtype));
}

int64_t tensor_bytes(DType dtype, Layout layout, int64_t rows, int64_t cols) {
  if (layout == Layout::Rows16 && dtype != DType::Q8 && dtype != DType::Q4)
    throw std::invalid_argument(std::string("layout rows16 holds int8 or int4, not ") + dtype_name(dtype));
  if (rows < 0) throw std::invalid_argument("tensor_bytes: negative row count " + std::to_string(rows));
  if (rows > INT64_MAX - kGroupRows) throw std::invalid_argument("tensor_bytes: row count overflows 64 bits");
  return size_mul(stored_rows(layout, rows), row_bytes(dtype, cols), "tensor_bytes");
}

namespace {

// Where piece p (quant bytes 4p .. 4p+3) of row i's block b lies in a Rows16 group, and where
// its scale lies: the one definition both directions of the layout use.
inline int64_t piece16_offset(DType dtype, int64_t b, int i, int p) {
  return b * group_block_bytes(dtype) + 2 * kGroupRows + int64_t(p) * 4 * kGroupRows + 4 * i;
}
inline int64_t scale16_offset(DType dtype, int64_t b, int i) { return b * group_block_bytes(dtype) + 2 * i; }

}  // namespace

void interleave_rows16(DType dtype, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const int64_t rb = row_bytes(dtype, cols), nb = n_blocks(cols), bq = block_quant_bytes(dtype);
  const int64_t groups = stored_rows(Layout::Rows16, rows) / kGroupRows, gbytes = kGroupRows * rb;
  (void)tensor_bytes(dtype, Layout::Rows16, rows, cols);  // the dtype check
  for (int64_t g = 0; g < groups; ++g) {
    uint8_t* out = dst + g * gbytes;
    for (int i = 0; i < kGroupRows; ++i) {
      const int64_t r = g * kGroupRows + i;
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* sc = out + scale16_offset(dtype, b, i);
        if (r >= rows) {  // padding row: scale 0, levels 0 (Q4 stores level 0 as nibble 8)
          sc[0] = sc[1] = 0;
          for (int p = 0; p < bq / 4; ++p) std::memset(out + piece16_offset(dtype, b, i, p), dtype == DType::Q4 ? 0x88 : 0, 4);
          continue;
        }
        const uint8_t* row = src + r * rb;
        std::memcpy(sc, row + 2 * b, 2);
        for (int p = 0; p < bq / 4; ++p)
          std::memcpy(out + piece16_offset(dtype, b, i, p), row + 2 * nb + b * bq + 4 * p, 4);
      }
    }
  }
}

void gather_row16(DType dtype, const uint8_t* data, int64_t cols, int64_t r, uint8_t* row) {
  const int64_t rb = row_bytes(dtype, cols), nb = n_blocks(cols), bq = block_quant_bytes(dtype);
  const uint8_t* group = data + (r / kGroupRows) * kGroupRows * rb;
  const int i = int(r % kGroupRows);
  for (int64_t b = 0; b < nb; ++b) {
    std::memcpy(row + 2 * b, group + scale16_offset(dtype, b, i), 2);
    for (int p = 0; p < bq / 4; ++p)
      std::memcpy(row + 2 * nb + b * bq + 4 * p, group + piece16_offset(dtype, b, i, p), 4);
  }
}

namespace {

// Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 pushes the fraction bits out
// in the current (default, nearest-even) rounding mode. Plain SSE2 arithmetic, so the loops
// below vectorise on the baseline x86-64 build where nearbyintf would be a libm call.
inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// q = clamp(round(x * iscale)); returns sum x q and sum q q (for the least-squares scale).
inline void try_scale(const float* x, float iscale, float qmin, float qmax, float* sxq, float* sqq) {
  float a = 0.f, b = 0.f;
  for (int j = 0; j < kBlock; ++j) {
    const float q = clampf(round_even(x[j] * iscale), qmin, qmax);
    a += x[j] * q;
    b += q * q;
  }
  *sxq = a;
  *sqq = b;
}

}  // namespace

// Scale choice (docs/quantization.md): for a fixed scale d the best levels are q = round(x / d)
// (clamped), and for fixed levels the best scale is the least-squares d = sum(x q) / sum(q q),
// which leaves error sum(x^2) - sum(x q)^2 / sum(q q). So we try a few inverse scales around the
// max-abs one (which wastes range when one outlier dominates, or rounds the largest weights
// badly), keep the one maximising sum(x q)^2 / sum(q q), refit d by least squares, round d to
// f16 (what is stored) and finally re-round q against the stored d.
float quantize_block(const float* xin, int n, int qmin, int qmax, int8_t* qout) {
  float x[kBlock];
  for (int j = 0; j < kBlock; ++j) x[j] = j < n ? xin[j] : 0.f;
  float xm = 0.f, amax = 0.f;  // the signed value of largest magnitude
  for (int j = 0; j < kBlock; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      xm = x[j];
    }
  }
  if (!(amax > 0.f) || !std::isfinite(amax)) {
    std::memset(qout, 0, kBlock);
    return 0.f;
  }
  // Map the largest-magnitude weight onto the longer end of the range: for [-8, 7] that is -8
  // (the scale may be negative), so all 16 levels are usable, as in llama.cpp's Q4_0.
  const float nlev = float(-qmin > qmax ? -qmin : qmax);
  const bool wide = qmax - qmin > 32;  // int8: rounding error is tiny; fewer candidates suffice
  const int ntry = wide ? 2 : 6;
  const float step = wide ? 0.5f : 0.15f;
  float best_score = -1.f, best_d = 0.f;
  for (int i = -ntry; i <= ntry; ++i) {
    const float iscale = -(nlev + step * float(i)) / xm;
    float sxq, sqq;
    try_scale(x, iscale, float(qmin), float(qmax), &sxq, &sqq);
    if (sqq > 0.f && sxq * sxq / sqq > best_score) {
      best_score = sxq * sxq / sqq;
      best_d = sxq / sqq;
    }
  }
  // One refinement: re-round against the least-squares scale and refit.
  {
    float sxq, sqq;
    try_scale(x, 1.f / best_d, float(qmin), float(qmax), &sxq, &sqq);
    if (sqq > 0.f && sxq * sxq / sqq > best_score) best_d = sxq / sqq;
  }
  const float d = f16_to_f32(f32_to_f16(best_d));
  if (d == 0.f || !std::isfinite(d)) {
    std::memset(qout, 0, kBlock);
    return 0.f;
  }
  const float id = 1.f / d;
  for (int j = 0; j < kBlock; ++j)
    qout[j] = int8_t(clampf(round_even(x[j] * id), float(qmin), float(qmax)));
  return d;
}

static void quantize_row_blocks(DType dtype, const float* x, int64_t cols, uint8_t* out) {
  const int64_t nb = n_blocks(cols);
  auto* scales = reinterpret_cast<uint16_t*>(out);  // may be unaligned only if the caller is odd
  uint8_t* qs = out + 2 * nb;
  int8_t q[kBlock];
  for (int64_t b = 0; b < nb; ++b) {
    const int n = int(std::min<int64_t>(kBlock, cols - b * kBlock));
    float d;
    if (dtype == DType::Q8) {
      d = quantize_block(x + b * kBlock, n, -127, 127, q);
      std::memcpy(qs + b * kBlock, q, kBlock);
    } else {
      d = quantize_block(x + b * kBlock, n, -8, 7, q);
      uint8_t* o = qs + b * (kBlock / 2);
      for (int j = 0; j < kBlock / 2; ++j)
        o[j] = uint8_t((q[j] + 8) | (q[j + kBlock / 2] + 8) << 4);
    }
    const uint16_t h = f32_to_f16(d);
    std::memcpy(&scales[b], &h, 2);
  }
}

static void quantize_row(DType dtype, const float* x, int64_t cols, uint8_t* out, const float* imp) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, x, size_t(cols) * 4); break;
    case DType::BF16: {
      auto* o = reinterpret_cast<uint16_t*>(out);
      for (int64_t c = 0; c < cols; ++c) o[c] = f32_to_bf16(x[c]);
      break;
    }
    case DType::F16: {
      auto* o = reinterpret_cast<uint16_t*>(out);
      for (int64_t c = 0; c < cols; ++c) o[c] = f32_to_f16(x[c]);
      break;
    }
    case DType::Q8:
    case DType::Q4: quantize_row_blocks(dtype, x, cols, out); break;
    case DType::Q4_K: quantize_row_q4_k(x, cols, imp, out); break;
    case DType::Q5_0: quantize_row_q5_0(x, cols, out); break;
    case DType::Q6_K:
    case DType::Q5_K:
    case DType::Q4_1:
    case DType::Q5_1: break;  // refused by quantize_rows
  }
}

void quantize_rows(DType dtype, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
                   int n_threads, const float* imp) {
  const int64_t rb = row_bytes(dtype, cols);
  if (dtype == DType::Q6_K || dtype == DType::Q5_K || dtype == DType::Q4_1 || dtype == DType::Q5_1)
    throw std::invalid_argument(std::string("quantize: ") + dtype_name(dtype) +
                                " is imported from GGUF files as is; there is no quantiser for it");
  ThreadPool pool(std::max(1, n_threads));
  pool.parallel_for(rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) quantize_row(dtype, src + r * cols, cols, dst + r * rb, imp);
  });
}

void dequantize_row(DType dtype, const uint8_t* row, int64_t cols, float* out) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, row, size_t(cols) * 4); return;
    case DType::BF16: {
      auto* h = reinterpret_cast<const uint16_t*>(row);
      for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(h[c]);
      return;
    }
    case DType::F16: {
      auto* h = reinterpret_cast<const uint16_t*>(row);
      for (int64_t c = 0; c < cols; ++c) out[c] = f16_to_f32(h[c]);
      return;
    }
    case DType::Q8:
    case DType::Q4: {
      const int64_t nb = n_blocks(cols);
      const uint8_t* qs = row + 2 * nb;
      for (int64_t b = 0; b < nb; ++b) {
        uint16_t h;
        std::memcpy(&h, row + 2 * b, 2);
        const float d = f16_to_f32(h);
        const int n = int(std::min<int64_t>(kBlock, cols - b * kBlock));
        float* o = out + b * kBlock;
        if (dtype == DType::Q8) {
          const auto* q = reinterpret_cast<const int8_t*>(qs + b * kBlock);
          for (int j = 0; j < n; ++j) o[j] = d * float(q[j]);
        } else {
          const uint8_t* q = qs + b * (kBlock / 2);
          for (int j = 0; j < n; ++j) {
            const int v = j < kBlock / 2 ? (q[j] & 15) : (q[j - kBlock / 2] >> 4);
            o[j] = d * float(v - 8);
          }
        }
      }
      return;
    }
    case DType::Q5_0:
    case DType::Q4_K:
    case DType::Q6_K:
    case DType::Q5_K:
    case DType::Q4_1:
    case DType::Q5_1: gguf_dequantize_row(dtype, row, cols, out); return;
  }
  throw std::invalid_argument(std::string("dequantize_row: unsupported dtype ") + dtype_name(dtype));
}

}  // namespace gemma::quant
