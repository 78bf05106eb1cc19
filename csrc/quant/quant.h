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

#include "core/checked.h"
#include "kernels/dtype.h"

namespace gemma::quant {

constexpr int kBlock = 32;  // weights per quantisation block (Q8, Q4)

// ceil(cols / 32) without forming cols + 31 (which overflows for cols near 2^63).
inline int64_t n_blocks(int64_t cols) { return cols / kBlock + (cols % kBlock > 0); }
inline constexpr int block_quant_bytes(DType t) { return t == DType::Q4 ? kBlock / 2 : kBlock; }

// Bytes one row of `cols` weights occupies (quantised rows are padded to whole blocks); throws
// std::invalid_argument for cols < 0 or a size past int64 (core/checked.h).
int64_t row_bytes(DType dtype, int64_t cols);

// ---- Layout::Rows16, the int8/int4 kernel layout ----
// Rows are taken 16 at a time (the last group padded with zero rows: scale 0, level 0). For each
// block b, in ascending order, a group stores
//   [16 f16 scales, row 0 first][piece 0 of rows 0..15][piece 1 of rows 0..15] ...
// where piece p of a row's block is its quant bytes 4p .. 4p+3 (Q8: levels 4p .. 4p+3; Q4: the
// packed bytes, i.e. levels 4p .. 4p+3 in the low nibbles and 16+4p .. 16+4p+3 in the high).
// So one 64-byte line holds one piece of all 16 rows, already in the SIMD kernels' "lane = row"
// order (16 lanes of 4 bytes), and a thread's rows are one ascending stream: no gather, no
// strided reads. A group holds exactly the bytes of its 16 rows in the Rows layout.
constexpr int kGroupRows = 16;
inline int64_t stored_rows(Layout layout, int64_t rows) {
  return layout == Layout::Rows16 ? (rows / kGroupRows + (rows % kGroupRows > 0)) * kGroupRows : rows;
}
// Bytes of one block of one group (scales + pieces).
inline constexpr int64_t group_block_bytes(DType t) { return kGroupRows * (2 + block_quant_bytes(t)); }
// Bytes a [rows, cols] tensor occupies; throws for Rows16 with a dtype other than Q8/Q4, and for
// negative or overflowing sizes.
int64_t tensor_bytes(DType dtype, Layout layout, int64_t rows, int64_t cols);
// Rows16 bytes (tensor_bytes of them) from `rows` rows in the Rows layout.
void interleave_rows16(DType dtype, const uint8_t* rows_src, int64_t rows, int64_t cols, uint8_t* dst);
// Row r of a Rows16 tensor back in the Rows layout (row_bytes(dtype, cols) bytes into `row`).
void gather_row16(DType dtype, const uint8_t* data, int64_t cols, int64_t r, uint8_t* row);

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
