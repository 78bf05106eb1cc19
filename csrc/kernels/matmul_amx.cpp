// AMX (Intel Sapphire Rapids and later): int8/int4 prefill on tile registers.
//
// The Rows16 layout (quant.h) of a block of 16 rows is 8 lines of 64 bytes, line g lane i = levels
// 4g..4g+3 of row i: exactly AMX's "B" operand for K = 32, N = 16 (K/4 rows of N dwords). So one
// tdpbssd multiplies a block of 16 tokens (A: 16 rows x 32 int8 activation levels) by a block of
// 16 weight rows and leaves the 16 x 16 exact integer dots `idot` in a tile: 8192 multiply-adds in
// one instruction, where a vpdpbusd does 64. Each block has its own scales, so the tile is stored
// after every block and each token's 16 dots take the canonical float step (quant_canonical.h):
// acc = fma(float(idot), dw * dx, acc), blocks in ascending order. The integer dot is exact, the
// float steps are the same as every other kernel's, so the bits equal the scalar reference's and
// the AVX-512 decode's: prefill and decode still give the same logits.
//
// int8 blocks are read from the mapped file as they lie (signed levels: tdpbssd, no offset).
// int4 blocks are unpacked once per pass into signed levels (nibble - 8) in a per-thread scratch
// and used by every token tile. Everything else - decode, the last T % 16 tokens, float and
// GGUF weights - runs the AVX-512 kernels, which compute the same bits.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/matmul.h"
#include "quant/quant.h"

namespace gemma::amx {
namespace {

constexpr int kTok = 16;                  // tokens per tile (A and C rows)
constexpr int kRows = quant::kGroupRows;  // weight rows per tile (C columns): one Rows16 group
constexpr int kQB = quant::kBlock;        // levels per block: the tiles' K
constexpr int kBlockLevelBytes = kRows * kQB;  // one block of a group as signed levels (512 bytes)

// Tiles: 0, 1 = C (16 tokens x 16 int32), 2, 3 = A (16 tokens x 32 bytes), 4, 5 = B (8 x 64 bytes).
// Two of each so the next block's product runs while this block's dots are scaled.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, kQB, kQB, 64, 64};
  uint8_t rows[16] = {kTok, kTok, kTok, kTok, kQB / 4, kQB / 4};
};

// The levels of block b of a group, as tdpbssd's B operand (8 lines of 64 signed bytes).
template <DType DT>
inline const int8_t* block_levels(const uint8_t* group, int64_t b, const int8_t* unpacked) {
  if constexpr (DT == DType::Q8) {
    return reinterpret_cast<const int8_t*>(group + b * quant::group_block_bytes(DT) + 2 * kRows);
  } else {
    return unpacked + b * kBlockLevelBytes;
  }
}

// int4 block b of a group (packed byte j of a row = levels j and j + 16) as signed levels:
// line p < 4 from the low nibbles of packed line p, line p + 4 from its high nibbles.
inline void unpack_q4_group(const uint8_t* group, int64_t nb, int8_t* out) {
  const __m512i m = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* lines = group + b * quant::group_block_bytes(DType::Q4) + 2 * kRows;
    int8_t* o = out + b * kBlockLevelBytes;
    for (int p = 0; p < 4; ++p) {
      const __m512i P = _mm512_loadu_si512(lines + 64 * p);
      _mm512_storeu_si512(o + 64 * p, _mm512_sub_epi8(_mm512_and_si512(P, m), eight));
      _mm512_storeu_si512(o + 64 * (p + 4), _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi32(P, 4), m), eight));
    }
  }
}

// acc[j] = fma(float(dots[j][:]), dw * dx[t0 + j, b], acc[j]): the canonical step for 16 tokens.
// Inlined and unrolled so the 16 accumulators stay in registers (a loop over an array of them, or
// a lambda capturing them, makes GCC keep them in memory: a load and a store per step).
__attribute__((always_inline)) inline void scale_block(const int32_t* dots, const uint8_t* scales, const QuantizedActs& xq, int64_t t0,
                        int64_t b, __m512 acc[kTok]) {
  const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
#pragma GCC unroll 16
  for (int j = 0; j < kTok; ++j) {
    const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xq.d[(t0 + j) * xq.nb + b]));
    acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + kRows * j)), scale, acc[j]);
  }
}

// 16 tokens from t0 against one group of 16 rows (`group` points at its block 0).
template <DType DT>
void tile_group(const uint8_t* group, const int8_t* unpacked, const QuantizedActs& xq, int64_t t0, float* Y,
                int64_t ldy, int64_t r, int64_t n_rows) {
  constexpr int64_t kStride = quant::group_block_bytes(DT);
  const int64_t nb = xq.nb, a_stride = nb * kQB;
  const int8_t* a = xq.q + t0 * a_stride;
  // The dots of block b go to dots[b % 4] and are scaled two blocks later, so a tile store has
  // long finished when its dots are read back (a tile store does not forward to vector loads).
  alignas(64) int32_t dots[4][kTok * kRows];
  __m512 acc[kTok];
#pragma GCC unroll 16
  for (int j = 0; j < kTok; ++j) acc[j] = _mm512_setzero_ps();
  // Block b's integer dots via tile c (A in tile ta, B in tb; _tile_* take literal numbers).
#define GEMMA_AMX_PRODUCT(c, ta, tb, b)                                  \
  do {                                                                  \
    _tile_loadd(ta, a + (b) * kQB, a_stride);                            \
    _tile_loadd(tb, block_levels<DT>(group, (b), unpacked), 64);          \
    _tile_zero(c);                                                      \
    _tile_dpbssd(c, ta, tb);                                            \
    _tile_stored(c, dots[(b) & 3], 64);                                 \
  } while (0)
#define GEMMA_AMX_SCALE(b) scale_block(dots[(b) & 3], group + (b) * kStride, xq, t0, (b), acc)
  for (int64_t b = 0; b < nb; b += 2) {
    GEMMA_AMX_PRODUCT(0, 2, 4, b);
    if (b + 1 < nb) GEMMA_AMX_PRODUCT(1, 3, 5, b + 1);
    if (b >= 2) {
      GEMMA_AMX_SCALE(b - 2);
      GEMMA_AMX_SCALE(b - 1);
    }
  }
  for (int64_t b = (nb - 1) / 2 * 2; b < nb; ++b) GEMMA_AMX_SCALE(b);  // the last one or two
#undef GEMMA_AMX_PRODUCT
#undef GEMMA_AMX_SCALE
  const __mmask16 keep = n_rows >= kRows ? __mmask16(0xffff) : __mmask16((1u << n_rows) - 1);
#pragma GCC unroll 16
  for (int j = 0; j < kTok; ++j) _mm512_mask_storeu_ps(Y + (t0 + j) * ldy + r, keep, acc[j]);
}

// Rows [r0, r1) (r0 starts a group) for the first T16 (a multiple of 16) tokens. Passes of
// groups that fit ~192 KiB of L2: every token tile runs over a pass, so each weight byte comes
// from memory once per matmul.
template <DType DT>
void tile_rows16(const WeightView& W, const QuantizedActs& xq, int64_t T16, float* Y, int64_t ldy, int64_t r0,
                 int64_t r1) {
  const int64_t nb = xq.nb, gbytes = nb * quant::group_block_bytes(DT);
  const uint8_t* first = W.data + r0 / kRows * gbytes;
  const int64_t n_groups = (r1 - r0 + kRows - 1) / kRows;
  const int64_t per_pass = std::max<int64_t>(1, (int64_t(192) << 10) / (nb * kBlockLevelBytes));
  thread_local std::vector<int8_t> unpacked;
  if (DT == DType::Q4 && unpacked.size() < size_t(per_pass * nb * kBlockLevelBytes))
    unpacked.resize(size_t(per_pass * nb * kBlockLevelBytes));
  const TileConfig cfg;
  _tile_loadconfig(&cfg);
  for (int64_t g0 = 0; g0 < n_groups; g0 += per_pass) {
    const int64_t g1 = std::min(n_groups, g0 + per_pass);
    if constexpr (DT == DType::Q4)
      for (int64_t g = g0; g < g1; ++g)
        unpack_q4_group(first + g * gbytes, nb, unpacked.data() + (g - g0) * nb * kBlockLevelBytes);
    for (int64_t t = 0; t < T16; t += kTok)
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t r = r0 + g * kRows;
        tile_group<DT>(first + g * gbytes, unpacked.data() + (g - g0) * nb * kBlockLevelBytes, xq, t, Y, ldy, r,
                       std::min<int64_t>(kRows, r1 - r));
      }
  }
  _tile_release();
}

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y, int64_t ldy,
                 int64_t r0, int64_t r1) {
  const bool tiles = W.layout == Layout::Rows16 && (W.dtype == DType::Q8 || W.dtype == DType::Q4) && T >= kTok;
  if (!tiles) return avx512::matmul_rows(W, X, xq, T, Y, ldy, r0, r1);
  if (r0 % kRows != 0) throw std::logic_error("amx::matmul_rows: r0 must start a group of 16 rows");
  const int64_t T16 = T / kTok * kTok;
  if (W.dtype == DType::Q8) {
    tile_rows16<DType::Q8>(W, *xq, T16, Y, ldy, r0, r1);
  } else {
    tile_rows16<DType::Q4>(W, *xq, T16, Y, ldy, r0, r1);
  }
  if (T16 < T) {  // the last T % 16 tokens: the AVX-512 kernel, same bits
    const int64_t nb = xq->nb;
    const QuantizedActs tail{xq->q + T16 * nb * kQB, xq->d + T16 * nb, xq->s + T16 * nb, nb};
    avx512::matmul_rows(W, X + T16 * W.cols, &tail, T - T16, Y + T16 * ldy, ldy, r0, r1);
  }
}

}  // namespace gemma::amx
