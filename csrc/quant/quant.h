// Storage formats of weight rows: one source of truth for the converter (through the bindings)
// and the runtime. A tensor of shape [rows, cols] is `rows` rows of row_bytes(dtype, cols) bytes.
//
// Quantised rows (docs/quantization.md explains the choices):
//   nb = ceil(cols / 32) blocks; a row is  [nb f16 scales][nb blocks of quants]
//   Q8: block = 32 int8 q in [-127, 127];           w = d * q          (34 bytes / 32 weights)
//   Q4: block = 16 bytes, byte j = q[j] | q[j+16]<<4, q in [0, 15]; w = d * (q - 8)  (18 / 32)
// Scales come first so the quants of a row are one contiguous, 32-byte-granular stream that a
// kernel reads in ascending order. Columns past `cols` in the last block are stored as zero.
#pragma once
#include <cstdint>

#include "kernels/dtype.h"

namespace gemma::quant {

constexpr int kBlock = 32;  // weights per quantisation block (Q8, Q4)

inline int64_t n_blocks(int64_t cols) { return (cols + kBlock - 1) / kBlock; }
inline constexpr int block_quant_bytes(DType t) { return t == DType::Q4 ? kBlock / 2 : kBlock; }

// Bytes one row of `cols` weights occupies (quantised rows are padded to whole blocks).
int64_t row_bytes(DType dtype, int64_t cols);

// Encode `rows` float rows of `cols` values into `dst` (rows * row_bytes bytes). `imp` (q4_k
// only; may be null): per-column importance, the weights of the squared error it minimises.
void quantize_rows(DType dtype, const float* src, int64_t rows, int64_t cols, uint8_t* dst,
                   int n_threads, const float* imp = nullptr);

// Decode one stored row back to `cols` floats.
void dequantize_row(DType dtype, const uint8_t* row, int64_t cols, float* out);

// One block of n <= 32 floats (the rest treated as 0) to signed levels q and a scale d with
// x ~= d * q, q in [qmin, qmax], d chosen to minimise sum (x - d q)^2 (see quant.cpp).
float quantize_block(const float* x, int n, int qmin, int qmax, int8_t* q);

}  // namespace gemma::quant
