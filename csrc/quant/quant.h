// Storage formats of weight rows: one source of truth for the converter (through the bindings)
// and the runtime. A tensor of shape [rows, cols] is `rows` rows of row_bytes(dtype, cols) bytes.
#pragma once
#include <cstdint>

#include "kernels/dtype.h"

namespace gemma::quant {

constexpr int kBlock = 32;  // weights per quantisation block (Q8, Q4)

// Bytes one row of `cols` weights occupies (quantised rows are padded to whole blocks).
int64_t row_bytes(DType dtype, int64_t cols);

// Encode `rows` float rows of `cols` values into `dst` (rows * row_bytes bytes).
void quantize_rows(DType dtype, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
                   int n_threads);

// Decode one stored row back to `cols` floats.
void dequantize_row(DType dtype, const uint8_t* row, int64_t cols, float* out);

}  // namespace gemma::quant
