#include "quant/quant.h"

#include <stdexcept>
#include <string>

namespace gemma::quant {

int64_t row_bytes(DType dtype, int64_t cols) {
  switch (dtype) {
    case DType::F32: return cols * 4;
    case DType::BF16:
    case DType::F16: return cols * 2;
    default: break;
  }
  throw std::invalid_argument(std::string("row_bytes: unsupported dtype ") + dtype_name(dtype));
}

void quantize_rows(DType dtype, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
                   int n_threads) {
  const int64_t rb = row_bytes(dtype, cols);
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    uint8_t* out = dst + r * rb;
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
      default: break;
    }
  }
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
    default: break;
  }
  throw std::invalid_argument(std::string("dequantize_row: unsupported dtype ") + dtype_name(dtype));
}

}  // namespace gemma::quant
